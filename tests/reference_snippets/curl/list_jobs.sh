curl http://api.qualgent.ai/v1/jobs/list \
  -H "X-Api-Key: qg_your_api_key_here"

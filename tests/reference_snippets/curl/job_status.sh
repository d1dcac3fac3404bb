curl http://api.qualgent.ai/v1/jobs/status/run_abc123 \
  -H "X-Api-Key: qg_your_api_key_here"

# Set environment variable
export QUALGENT_API_KEY="qg_your_api_key_here"

# Use in curl commands
curl http://api.qualgent.ai/v1/apps \
  -H "X-Api-Key: $QUALGENT_API_KEY"

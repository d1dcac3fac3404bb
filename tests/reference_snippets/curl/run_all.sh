curl http://api.qualgent.ai/v1/test-cases/run-all \
  -H "X-Api-Key: qg_your_api_key_here" \
  -H "Content-Type: application/json" \
  -d '{
    "device": {
      "name": "Pixel 7",
      "platform": "Android",
      "os_version": "14",
      "orientation": "portrait"
    },
    "app_file_id": "file_abc123",
    "category_id": "770e8400-e29b-41d4-a716-446655440000"
  }'

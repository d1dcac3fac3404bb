curl http://api.qualgent.ai/v1/test-cases/run \
  -H "X-Api-Key: qg_your_api_key_here" \
  -H "Content-Type: application/json" \
  -d '{
    "jobs": [
      {
        "device": {
          "name": "Pixel 7",
          "platform": "Android",
          "os_version": "14",
          "orientation": "portrait"
        },
        "test_case_id": "tc_xyz789",
        "app_file_id": "file_abc123",
      }
    ]
  }'

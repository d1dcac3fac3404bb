curl http://api.qualgent.ai/v1/apps/upload \
  -H "X-Api-Key: qg_your_api_key_here" \
  -F "file=@/path/to/your/app.apk" \
  -F "app_name=MyApp" \
  -F "version=1.0.0"

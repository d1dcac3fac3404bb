import requests

with open('/path/to/your/app.apk', 'rb') as f:
    files = {'file': f}
    data = {
        'app_name': 'MyApp',
        'version': '1.0.0',
        'os': 'android' # Optional: auto-detected from file extension if not provided
    }

    response = requests.post(
        'http://api.qualgent.ai/v1/apps/upload',
        headers={'X-Api-Key': 'qg_your_api_key_here'},
        files=files,
        data=data
    )

print(response.json())

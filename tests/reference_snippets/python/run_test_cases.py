import requests

response = requests.post(
    'http://api.qualgent.ai/v1/test-cases/run',
    headers={
        'X-Api-Key': 'qg_your_api_key_here',
        'Content-Type': 'application/json'
    },
    json={
        'jobs': [
            {
                'test_case_id': 'tc_xyz789',
                'platform': 'android', # Optional: for auto-selection
                'app_file_id': 'file_abc123', # Optional if platform provided
                'device': { # Optional if platform provided
                    'name': 'Pixel 7',
                    'platform': 'Android',
                    'os_version': '14',
                    'orientation': 'portrait'
                }
            }
        ]
    }
)

print(response.json())

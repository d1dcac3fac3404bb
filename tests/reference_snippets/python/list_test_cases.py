import requests

response = requests.get(
    'http://api.qualgent.ai/v1/test-cases/list',
    headers={'X-Api-Key': 'qg_your_api_key_here'}
)

test_cases = response.json()
print(test_cases)

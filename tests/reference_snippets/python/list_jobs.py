import requests

response = requests.get(
    'http://api.qualgent.ai/v1/jobs/list',
    headers={'X-Api-Key': 'qg_your_api_key_here'}
)

jobs = response.json()
print(jobs)

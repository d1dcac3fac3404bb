import requests

response = requests.get(
    'http://api.qualgent.ai/v1/jobs/status/run_abc123',
    headers={'X-Api-Key': 'qg_your_api_key_here'}
)

job_status = response.json()
print(f"Status: {job_status['status']}")

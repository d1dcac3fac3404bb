import os
from dotenv import load_dotenv

# Load from .env file
load_dotenv()

api_key = os.getenv('QUALGENT_API_KEY')

# Use in requests
import requests
response = requests.get(
    'http://api.qualgent.ai/v1/apps',
    headers={'X-Api-Key': api_key}
)

// Load from .env file
require('dotenv').config();

const apiKey = process.env.QUALGENT_API_KEY;

// Use in fetch requests
const response = await fetch('http://api.qualgent.ai/v1/apps', {
  headers: {
    'X-Api-Key': apiKey
  }
});

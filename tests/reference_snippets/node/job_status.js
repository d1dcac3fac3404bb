const fetch = require('node-fetch');

const response = await fetch('http://api.qualgent.ai/v1/jobs/status/run_abc123', {
  headers: {
    'X-Api-Key': 'qg_your_api_key_here'
  }
});

const jobStatus = await response.json();
console.log('Status:', jobStatus.status);

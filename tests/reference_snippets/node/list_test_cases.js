const fetch = require('node-fetch');

const response = await fetch('http://api.qualgent.ai/v1/test-cases/list', {
  headers: {
    'X-Api-Key': 'qg_your_api_key_here'
  }
});

const testCases = await response.json();
console.log(testCases);

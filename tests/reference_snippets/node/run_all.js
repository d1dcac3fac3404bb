const fetch = require('node-fetch');

const response = await fetch('http://api.qualgent.ai/v1/test-cases/run-all', {
  method: 'POST',
  headers: {
    'X-Api-Key': 'qg_your_api_key_here',
    'Content-Type': 'application/json'
  },
  body: JSON.stringify({
    app_file_id: 'file_abc123',
    device: {
      name: 'Pixel 7',
      platform: 'Android',
      os_version: '14',
      orientation: 'portrait'
    },
    category_id: '770e8400-e29b-41d4-a716-446655440000' // Optional
  })
});

const result = await response.json();
console.log(result);

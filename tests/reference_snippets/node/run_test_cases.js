const fetch = require('node-fetch');

const response = await fetch('http://api.qualgent.ai/v1/test-cases/run', {
  method: 'POST',
  headers: {
    'X-Api-Key': 'qg_your_api_key_here',
    'Content-Type': 'application/json'
  },
  body: JSON.stringify({
    jobs: [
      {
        test_case_id: 'tc_xyz789',
        platform: 'android', // Optional: for auto-selection
        app_file_id: 'file_abc123', // Optional if platform provided
        device: { // Optional if platform provided
          name: 'Pixel 7',
          platform: 'Android',
          os_version: '14',
          orientation: 'portrait'
        }
      }
    ]
  })
});

const result = await response.json();
console.log(result);

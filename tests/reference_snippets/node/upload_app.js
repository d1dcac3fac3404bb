const FormData = require('form-data');
const fs = require('fs');
const fetch = require('node-fetch');

const form = new FormData();
form.append('file', fs.createReadStream('/path/to/your/app.apk'));
form.append('app_name', 'MyApp');
form.append('version', '1.0.0');
form.append('os', 'android'); // Optional: auto-detected from file extension if not provided

const response = await fetch('http://api.qualgent.ai/v1/apps/upload', {
  method: 'POST',
  headers: {
    'X-Api-Key': 'qg_your_api_key_here',
    ...form.getHeaders()
  },
  body: form
});

const result = await response.json();
console.log(result);

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

func main() {
	payload := map[string]interface{}{
		"jobs": []map[string]interface{}{
			{
				"test_case_id": "tc_xyz789",
				"platform":     "android",     // Optional: for auto-selection
				"app_file_id":  "file_abc123", // Optional if platform provided
				"device": map[string]interface{}{ // Optional if platform provided
					"name":        "Pixel 7",
					"platform":    "Android",
					"os_version":  "14",
					"orientation": "portrait",
				},
			},
		},
	}

	jsonData, _ := json.Marshal(payload)
	req, _ := http.NewRequest("POST", "http://api.qualgent.ai/v1/test-cases/run", bytes.NewBuffer(jsonData))
	req.Header.Add("X-Api-Key", "qg_your_api_key_here")
	req.Header.Add("Content-Type", "application/json")

	client := &http.Client{}
	resp, _ := client.Do(req)
	defer resp.Body.Close()

	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
}

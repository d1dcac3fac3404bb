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
		"app_file_id": "file_abc123",
		"device": map[string]interface{}{
			"name":        "Pixel 7",
			"platform":    "Android",
			"os_version":  "14",
			"orientation": "portrait",
		},
		"category_id": "770e8400-e29b-41d4-a716-446655440000", // Optional
	}

	jsonData, _ := json.Marshal(payload)
	req, _ := http.NewRequest("POST", "http://api.qualgent.ai/v1/test-cases/run-all", bytes.NewBuffer(jsonData))
	req.Header.Add("X-Api-Key", "qg_your_api_key_here")
	req.Header.Add("Content-Type", "application/json")

	client := &http.Client{}
	resp, _ := client.Do(req)
	defer resp.Body.Close()

	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
}

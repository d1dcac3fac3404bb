package main

import (
	"net/http"
	"os"
)

func main() {
	// Load from environment variable
	apiKey := os.Getenv("QUALGENT_API_KEY")

	// Use in HTTP requests
	client := &http.Client{}
	req, _ := http.NewRequest("GET", "http://api.qualgent.ai/v1/apps", nil)
	req.Header.Add("X-Api-Key", apiKey)

	resp, _ := client.Do(req)
	defer resp.Body.Close()
}

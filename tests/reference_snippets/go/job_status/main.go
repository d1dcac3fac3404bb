package main

import (
	"fmt"
	"io"
	"net/http"
)

func main() {
	client := &http.Client{}
	req, _ := http.NewRequest("GET", "http://api.qualgent.ai/v1/jobs/status/run_abc123", nil)
	req.Header.Add("X-Api-Key", "qg_your_api_key_here")

	resp, _ := client.Do(req)
	defer resp.Body.Close()

	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
}

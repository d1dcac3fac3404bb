package main

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
)

func main() {
	file, _ := os.Open("/path/to/your/app.apk")
	defer file.Close()

	body := &bytes.Buffer{}
	writer := multipart.NewWriter(body)

	part, _ := writer.CreateFormFile("file", "app.apk")
	io.Copy(part, file)

	writer.WriteField("app_name", "MyApp")
	writer.WriteField("version", "1.0.0")
	writer.WriteField("os", "android") // Optional: auto-detected from file extension if not provided
	writer.Close()

	req, _ := http.NewRequest("POST", "http://api.qualgent.ai/v1/apps/upload", body)
	req.Header.Add("X-Api-Key", "qg_your_api_key_here")
	req.Header.Set("Content-Type", writer.FormDataContentType())

	client := &http.Client{}
	resp, _ := client.Do(req)
	defer resp.Body.Close()

	respBody, _ := io.ReadAll(resp.Body)
	fmt.Println(string(respBody))
}

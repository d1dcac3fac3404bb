from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AppOut(BaseModel):
    id: str = Field(description="Unique file identifier (use it as app_file_id).")
    name: str = Field(description="Original filename.")
    version: str = Field(description="Application version number.")
    os: str = Field(description="Operating system: android or ios.")
    link: str = Field(description="Pre-signed download URL (valid for 5 minutes).")
    app_name: str
    file_size: int
    file_type: str
    sha256: str
    metadata: dict[str, Any]
    created_at: datetime

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "file_01jd2f3g4h5j6k7m8n9p0q1r2s",
                    "name": "app.apk",
                    "version": "1.0.0",
                    "os": "android",
                    "link": "http://127.0.0.1:8000/v1/apps/file_01jd2f3g4h5j6k7m8n9p0q1r2s/download?org=org_01jd2f3g4h5j6k7m8n9p0q1r2s&expires=1757339553&signature=…",
                    "app_name": "MyApp",
                    "file_size": 52428800,
                    "file_type": "application/vnd.android.package-archive",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "metadata": {"package_type": "apk"},
                    "created_at": "2026-11-28T12:00:00Z",
                }
            ]
        }
    )


class UploadedFile(BaseModel):
    file_path: str
    filename: str
    original_name: str
    file_size: int
    file_type: str
    app_name: str
    version: str
    os: str
    user_id: str
    organization_id: str
    id: str
    sha256: str
    metadata: dict[str, Any]
    link: str


class UploadOut(BaseModel):
    success: bool = True
    file: UploadedFile

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "file": {
                        "file_path": "user_abc123/1757339253852-MyApp-1.0.0.apk",
                        "filename": "1757339253852-MyApp-1.0.0.apk",
                        "original_name": "app.apk",
                        "file_size": 52428800,
                        "file_type": "application/vnd.android.package-archive",
                        "app_name": "MyApp",
                        "version": "1.0.0",
                        "os": "android",
                        "user_id": "user_abc123",
                        "organization_id": "org_xyz789",
                        "id": "file_01jd2f3g4h5j6k7m8n9p0q1r2s",
                        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                        "metadata": {"package_type": "apk"},
                        "link": "http://127.0.0.1:8000/v1/apps/file_…/download?…",
                    },
                }
            ]
        }
    )


class DeleteIn(BaseModel):
    files: list[str] = Field(min_length=1, max_length=1000, description="Array of file IDs to delete.")


class DeleteOut(BaseModel):
    success: bool = True
    deleted: list[str]

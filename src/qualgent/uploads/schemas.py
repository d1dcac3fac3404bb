from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from qualgent.apps.schemas import AppOut


class UploadStatusOut(BaseModel):
    upload_id: str = Field(description="The resumable upload's ID (the last part of its Location).")
    offset: int = Field(description="Bytes received so far.")
    length: int = Field(description="The file's declared size (Upload-Length).")
    expires_at: datetime = Field(description="When the unfinished upload and its bytes are removed.")
    app: AppOut | None = Field(description="The app created when the last byte arrived; null before.")

from qualgent.cli.main import app

app()

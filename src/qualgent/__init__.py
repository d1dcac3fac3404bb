"""qualgent: a self-hostable service that runs automated mobile-app tests from CI/CD pipelines."""

__version__ = "0.1.0"

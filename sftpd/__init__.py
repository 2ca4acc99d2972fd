"""sftpd: a secure, quota-limited SFTP and SCP file service on asyncssh."""

__version__ = "0.1.0"

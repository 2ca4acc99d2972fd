"""Benchmarks: sftpd side by side with OpenSSH's sshd and a bare asyncssh SFTP server."""

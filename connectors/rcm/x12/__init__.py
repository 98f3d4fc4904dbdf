"""The X12 5010 clearinghouse channel: 837P out; 999 / 277CA / 835 and 270/271 over a folder or SFTP."""

"""The X12 5010 clearinghouse channel: 837P out (writer837, validate, target), files over a
folder or SFTP (transport, sftp). The registered RCM module is :mod:`connectors.rcm.x12.target`."""

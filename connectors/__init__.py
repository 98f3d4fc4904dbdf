"""Plug-in seams: EHR sources/parsers under ``connectors.ehr``, RCM targets under ``connectors.rcm``."""

"""RCM targets (FHIR, X12): push charges, fetch the RCM's view for reconciliation."""

"""metastore as a DICOMweb service (the service module lands on branch issue-12)."""

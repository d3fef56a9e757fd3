"""Reports generated in the background: CSV, XLSX and PDF from one
declaration per report type (reports.registry), streamed in constant memory
(reports.services). See reports/README.md."""

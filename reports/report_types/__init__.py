"""The kit's own report types, over its own job table. Importing this
package registers them (reports.apps autodiscovers `report_types`)."""

from reports.report_types import activity, jobs_export  # noqa: F401

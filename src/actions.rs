//! The GitHub Actions runtime contract: outputs, job summary, annotations, masking, groups and
//! the `workflow_dispatch` event. STUB: to be implemented.

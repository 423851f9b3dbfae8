//! GitHub's REST API: commits through the git-data API, pull requests, workflow dispatches and
//! token diagnosis. STUB: to be implemented.

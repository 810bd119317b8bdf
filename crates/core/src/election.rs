//! election (in progress)

//! requester (in progress)

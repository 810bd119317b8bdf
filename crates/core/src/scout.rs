//! scout (in progress)

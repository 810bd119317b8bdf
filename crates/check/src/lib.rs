//! Linearizability and bank checkers (to be written).

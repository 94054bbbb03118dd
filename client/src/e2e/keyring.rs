//! Placeholder until helper D's keyring lands (design.md "Client seam").

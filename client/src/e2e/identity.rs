//! Placeholder until helper D's identities land (design.md "Client seam").

//! Configuration (being written).

/// Placeholder until the configuration lands.
#[derive(Clone, Debug, Default)]
pub struct Config {}

/// Placeholder until the configuration lands.
#[derive(Clone, Debug, Default)]
pub struct ValidConfig {}

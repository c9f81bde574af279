//! Metric names, in one place.

pub const BUILD_INFO: &str = "vantage_build_info";
pub const SCHEDULER_LAG: &str = "vantage_scheduler_lag_seconds";
pub const SCHEDULER_SKIPPED: &str = "vantage_scheduler_skipped_rounds_total";
pub const RELOAD_OK: &str = "vantage_config_last_reload_successful";
pub const RELOAD_TS: &str = "vantage_config_last_reload_success_timestamp_seconds";
pub const TARGETS: &str = "vantage_targets";
pub const START_TIME: &str = "vantage_start_time_seconds";
pub const LED_PATTERN: &str = "vantage_led_pattern";
pub const DEVICE_CONDITION: &str = "vantage_device_condition";
pub const IDENTIFY_REMAINING: &str = "vantage_identify_remaining_seconds";
pub const LED_WRITE_ERRORS: &str = "vantage_led_write_errors_total";

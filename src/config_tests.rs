use super::*;

fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_map(&vars)
}

#[test]
fn defaults_match_the_spec() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.bind_addr.to_string(), "0.0.0.0:8000");
    assert_eq!(c.send_rate_per_second, 1.0);
    assert_eq!(c.send_max_attempts, 8);
    assert_eq!(c.send_backoff_base, Duration::from_secs(10));
    assert_eq!(c.worker_concurrency, 4);
    assert_eq!(c.app_timezone, chrono_tz::Asia::Jakarta);
    assert_eq!(c.service_phone, "08551000727");
    assert!(c.sandbox());
    assert!(!c.public_send_endpoints);
    assert_eq!(c.send_window.to_string(), "07:00-21:00");
    assert_eq!(c.recipient_min_interval_secs, 6);
    assert_eq!(c.circuit_failure_threshold, 20);
    assert_eq!(c.reminder_days_before.to_string(), "2,1,0");
    assert_eq!(c.service_interval_months, 4);
    assert!(c.reminder_include_manual);
    assert_eq!(c.workshop_name, "Bengkel");
    assert!(c.inbound.starsender_token.is_none());
    assert_eq!(
        c.inbound.keywords.matches("jangan kirim"),
        Some(crate::inbound::Keyword::Optout)
    );
}

#[test]
fn a_short_inbound_token_stops_start_up_naming_it_without_showing_it() {
    let err = parse(&[("INBOUND_STARSENDER_TOKEN", "tooshort")]).unwrap_err();
    assert_eq!(err.var, "INBOUND_STARSENDER_TOKEN");
    assert!(!err.to_string().contains("tooshort"), "{err}");
    let err = parse(&[("OPTIN_KEYWORDS", "stop")]).unwrap_err();
    assert_eq!(err.var, "OPTIN_KEYWORDS");
    let c = parse(&[("INBOUND_STARSENDER_TOKEN", &"k".repeat(32))]).unwrap();
    assert!(
        !format!("{c:?}").contains(&"k".repeat(32)),
        "the token is a secret"
    );
}

#[test]
fn the_calendar_comes_from_days_before_else_from_the_threshold() {
    let c = parse(&[("REMINDER_DAYS_THRESHOLD", "5")]).unwrap();
    assert_eq!(c.reminder_days_before.to_string(), "4,3,2,1,0");
    let c = parse(&[
        ("REMINDER_DAYS_THRESHOLD", "5"),
        ("REMINDER_DAYS_BEFORE", "3,1"),
    ])
    .unwrap();
    assert_eq!(c.reminder_days_before.to_string(), "3,1");
    let err = parse(&[("REMINDER_DAYS_BEFORE", "3,x")]).unwrap_err();
    assert_eq!(err.var, "REMINDER_DAYS_BEFORE");
    let err = parse(&[("SERVICE_INTERVAL_MONTHS", "0")]).unwrap_err();
    assert_eq!(err.var, "SERVICE_INTERVAL_MONTHS");
    let err = parse(&[("REMINDER_INCLUDE_MANUAL", "perhaps")]).unwrap_err();
    assert_eq!(err.var, "REMINDER_INCLUDE_MANUAL");
}

#[test]
fn a_bad_value_names_its_variable() {
    let err = parse(&[("SEND_MAX_ATTEMPTS", "many")]).unwrap_err();
    assert_eq!(err.var, "SEND_MAX_ATTEMPTS");
    let err = parse(&[("APP_TIMEZONE", "Mars/Olympus")]).unwrap_err();
    assert_eq!(err.var, "APP_TIMEZONE");
    let err = parse(&[("REMINDER_SCHEDULER_HOUR", "24")]).unwrap_err();
    assert_eq!(err.var, "REMINDER_SCHEDULER_HOUR");
    let err = parse(&[("STARSENDER_API_URL", "ftp://x")]).unwrap_err();
    assert_eq!(err.var, "STARSENDER_API_URL");
    let err = parse(&[("PUBLIC_SEND_ENDPOINTS", "maybe")]).unwrap_err();
    assert_eq!(err.var, "PUBLIC_SEND_ENDPOINTS");
    let err = parse(&[("SEND_WINDOW", "21:00")]).unwrap_err();
    assert_eq!(err.var, "SEND_WINDOW");
    let err = parse(&[("CIRCUIT_FAILURE_THRESHOLD", "0")]).unwrap_err();
    assert_eq!(err.var, "CIRCUIT_FAILURE_THRESHOLD");
    for bad in ["0.01", "1e-30", "-1", "NaN", "inf", "10001", "fast"] {
        let err = parse(&[("SEND_RATE_PER_SECOND", bad)]).unwrap_err();
        assert_eq!(err.var, "SEND_RATE_PER_SECOND", "{bad}");
    }
    for var in [
        "HTTP_HEADER_TIMEOUT_SECS",
        "HTTP_BODY_TIMEOUT_SECS",
        "HTTP_IDLE_TIMEOUT_SECS",
        "HTTP_MAX_CONNECTIONS",
    ] {
        for bad in ["0", "-1", "soon"] {
            let err = parse(&[(var, bad)]).unwrap_err();
            assert_eq!(err.var, var, "{var}={bad}");
        }
    }
}

#[test]
fn the_send_rate_is_zero_or_at_least_the_floor() {
    for (raw, rate) in [("0", 0.0), ("0.05", 0.05), ("0.5", 0.5), ("20", 20.0)] {
        let c = parse(&[("SEND_RATE_PER_SECOND", raw)]).unwrap();
        assert_eq!(c.send_rate_per_second, rate, "{raw}");
    }
    let err = parse(&[("SEND_RATE_PER_SECOND", "0.049")]).unwrap_err();
    assert!(err.to_string().contains("SEND_RATE_PER_SECOND"), "{err}");
    assert!(err.to_string().contains("0.05"), "{err}");
}

#[test]
fn http_limits_have_defaults_and_can_be_set() {
    let c = parse(&[]).unwrap();
    assert_eq!(
        c.http,
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1024,
        }
    );
    let c = parse(&[
        ("HTTP_HEADER_TIMEOUT_SECS", "1"),
        ("HTTP_BODY_TIMEOUT_SECS", "2"),
        ("HTTP_IDLE_TIMEOUT_SECS", "3"),
        ("HTTP_MAX_CONNECTIONS", "4"),
    ])
    .unwrap();
    assert_eq!(
        (
            c.http.header_timeout,
            c.http.body_timeout,
            c.http.idle_timeout,
            c.http.max_connections
        ),
        (
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(3),
            4
        )
    );
}

#[test]
fn live_mode_refuses_a_short_jwt_secret_without_showing_it() {
    let short = "x".repeat(MIN_LIVE_JWT_SECRET_BYTES - 1);
    let err = parse(&[("STARSENDER_API_KEY", "k"), ("JWT_SECRET", &short)]).unwrap_err();
    assert_eq!(err.var, "JWT_SECRET");
    assert!(!err.to_string().contains(&short), "{err}");
    let long = "x".repeat(MIN_LIVE_JWT_SECRET_BYTES);
    assert!(parse(&[("STARSENDER_API_KEY", "k"), ("JWT_SECRET", &long)]).is_ok());
    // Sandbox mode is for trying things out: any secret will do.
    assert!(parse(&[("JWT_SECRET", "s")]).is_ok());
}

#[test]
fn secrets_do_not_print() {
    let secret = "hush-hush-hush-hush-hush-hush-hush";
    let c = parse(&[
        ("STARSENDER_API_KEY", "sk-live-123"),
        ("JWT_SECRET", secret),
    ])
    .unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("sk-live-123") && !shown.contains(secret),
        "{shown}"
    );
}

#[test]
fn admin_settings_parse_and_refuse_bad_values() {
    let c = parse(&[]).unwrap();
    assert!(c.admin.phones.is_empty());
    assert!(c.admin.daily_summary);
    assert_eq!(c.admin.language, crate::templates::Language::Id);
    assert_eq!(c.admin.summary_check, Duration::from_secs(10));
    let c = parse(&[
        (
            "ADMIN_PHONES",
            "0812 1111 0001, +62 812-1111-0001,0812 1111 0002",
        ),
        ("ADMIN_DAILY_SUMMARY", "false"),
        ("ADMIN_LANGUAGE", "en"),
        ("ADMIN_SUMMARY_CHECK_SECS", "2"),
    ])
    .unwrap();
    let phones: Vec<&str> = c.admin.phones.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        phones,
        ["6281211110001", "6281211110002"],
        "normalized, once"
    );
    assert!(!c.admin.daily_summary);
    assert_eq!(c.admin.language, crate::templates::Language::En);
    assert_eq!(c.admin.summary_check, Duration::from_secs(2));
    for (var, value) in [
        ("ADMIN_PHONES", "0812 1111 0001, nope"),
        ("ADMIN_LANGUAGE", "jv"),
        ("ADMIN_DAILY_SUMMARY", "maybe"),
        ("ADMIN_SUMMARY_CHECK_SECS", "0"),
    ] {
        let e = parse(&[(var, value)]).unwrap_err().to_string();
        assert!(e.contains(var), "{var}={value}: {e}");
    }
}

use super::*;

const MAINTENANCE_ID: &str = "{salutation} {nama} untuk nomor kendaraan {no_pol} sebentar lagi tiba saat pemeliharaan rutin pada tanggal {tanggal_dmy}, daftarkan segera melalui nomor pelayanan kami {service_phone}";

fn subject<'a>(name: &'a str, salutation: Option<&'a str>) -> Subject<'a> {
    Subject {
        name,
        salutation,
        language: Language::Id,
        no_pol: "B 1234 ABC",
        model: Some("Avanza"),
        due: NaiveDate::from_ymd_opt(2025, 12, 18).unwrap(),
        today: NaiveDate::from_ymd_opt(2025, 12, 16).unwrap(),
    }
}

fn workshop() -> Workshop {
    Workshop {
        service_phone: "08551000727".into(),
        name: "Bengkel".into(),
    }
}

#[test]
fn the_seeded_text_renders_as_before_templates() {
    let v = values(&subject("Budi Santoso", None), &workshop());
    assert_eq!(
        render(MAINTENANCE_ID, &v),
        "Bapak Budi Santoso untuk nomor kendaraan B 1234 ABC sebentar lagi tiba saat pemeliharaan rutin pada tanggal 18-12-2025, daftarkan segera melalui nomor pelayanan kami 08551000727"
    );
}

#[test]
fn a_name_that_starts_with_a_salutation_gets_none() {
    for name in [
        "Bapak Joko",
        "bpk. Joko",
        "Pak Joko",
        "IBU Siti",
        "Bu Siti",
        "Sdr Andi",
        "Kak Rina",
    ] {
        assert_eq!(salutation(None, name), "", "{name}");
        assert_eq!(salutation(Some("Ibu"), name), "", "{name}");
    }
    assert_eq!(salutation(None, "Budi"), "Bapak", "Budi is not Bu");
    assert_eq!(salutation(None, "Pakde Joko"), "Bapak");
    assert_eq!(salutation(Some("Ibu"), "Siti"), "Ibu");
    assert_eq!(salutation(Some(""), "Siti"), "");
    let v = values(&subject("Bapak Joko", None), &workshop());
    assert!(render(MAINTENANCE_ID, &v).starts_with("Bapak Joko untuk"));
}

#[test]
fn an_empty_salutation_leaves_no_double_space() {
    let v = values(&subject("Siti", Some("")), &workshop());
    assert!(render(MAINTENANCE_ID, &v).starts_with("Siti untuk nomor"));
    assert_eq!(render("Halo {salutation} {nama},", &v), "Halo Siti,");
    assert_eq!(render("Halo {nama} {salutation}!", &v), "Halo Siti!");
    assert_eq!(render("{nama}, {salutation} ok", &v), "Siti, ok");
    let v = values(&subject("Siti", Some("Ibu")), &workshop());
    assert_eq!(render("Halo {salutation} {nama},", &v), "Halo Ibu Siti,");
}

#[test]
fn months_are_in_the_recipients_language() {
    let d = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    assert_eq!(tanggal(d, Language::Id), "1 Desember 2026");
    assert_eq!(tanggal(d, Language::En), "1 December 2026");
    assert_eq!(tanggal_dmy(d), "01-12-2026");
}

#[test]
fn saving_names_every_unknown_placeholder_and_rejects_bad_syntax() {
    assert!(check(MAINTENANCE, "Halo {nama} {model}").is_ok());
    let e = check(MANUAL, "Halo {nama} {model} {kode} {model}").unwrap_err();
    assert!(e.contains("{model}, {kode}"), "{e}");
    assert!(check("promo", "  ").is_err());
    assert!(check("promo", "Halo {nama").is_err());
    assert!(check("promo", "Halo nama}").is_err());
    assert!(check("promo", "Halo {Nama}").is_err());
    assert!(check("promo", "Harga {{promo}} untuk {nama}").is_ok());
    let v = values(&subject("Siti", None), &workshop());
    assert_eq!(render("{{x}} {nama}", &v), "{x} Siti");
    assert_eq!(used("{nama} {hari} {nama}"), ["nama", "hari"]);
}

#[test]
fn the_optout_confirmation_takes_the_workshop_and_the_optin_keyword_only() {
    let key = crate::inbound::OPTOUT_CONFIRMATION;
    assert!(
        check(
            key,
            "{workshop_name}: berhenti. Ketik {optin_keyword} di {service_phone}"
        )
        .is_ok()
    );
    let e = check(key, "Halo {nama}, {optin_keyword}").unwrap_err();
    assert!(
        e.contains("{nama}") && !e.contains("{optin_keyword}"),
        "{e}"
    );
    assert!(check("promo", "{optin_keyword}").is_err());
}

#[test]
fn hari_counts_days_to_the_due_date() {
    let v = values(&subject("Siti", None), &workshop());
    assert_eq!(v["hari"], "2");
    assert_eq!(v["model"], "Avanza");
}

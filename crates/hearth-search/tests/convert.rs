//! The converter on real documents made by LibreOffice (see fixtures/README.md).

use hearth_search::markdown::convert;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

#[test]
fn word_processing_documents_keep_headings_lists_and_tables() {
    for name in ["paris.docx", "paris.odt"] {
        let md = convert(name, &fixture(name)).expect(name).markdown;
        println!("{name}:\n{md}\n");
        assert!(md.contains("# Paris"), "{name}: {md}");
        assert!(
            md.contains("Eiffel Tower was completed in 1889"),
            "{name}: {md}"
        );
        assert!(md.contains("## Museums"), "{name}: {md}");
        assert!(
            md.contains("- The Louvre holds the Mona Lisa."),
            "{name}: {md}"
        );
        assert!(md.contains("| Sight | Opened |"), "{name}: {md}");
        assert!(md.contains("| Louvre | 1793 |"), "{name}: {md}");
    }
}

#[test]
fn pdf_text_and_spreadsheet_tables() {
    let md = convert("rivers.pdf", &fixture("rivers.pdf"))
        .expect("pdf")
        .markdown;
    println!("pdf:\n{md}\n");
    assert!(md.contains("Rivers of Europe"), "{md}");
    assert!(
        md.contains("The Danube flows through ten countries"),
        "{md}"
    );
    let md = convert("cities.xlsx", &fixture("cities.xlsx"))
        .expect("xlsx")
        .markdown;
    println!("xlsx:\n{md}\n");
    assert!(md.contains("| city | country | population |"), "{md}");
    assert!(md.contains("| Oslo | Norway | 709000 |"), "{md}");
}

#[test]
fn a_truncated_pdf_is_an_error() {
    let mut pdf = fixture("rivers.pdf");
    pdf.truncate(pdf.len() / 3);
    assert!(convert("broken.pdf", &pdf).is_err());
}

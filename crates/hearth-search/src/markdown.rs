//! Documents to markdown, as Workers AI's `toMarkdown` and AI Search's
//! indexing do: plain-text types pass as they are, HTML through `htmd`,
//! spreadsheets (XLSX, XLS, XLSB, ODS) through `calamine` as one table per
//! sheet, CSV as a table, DOCX and ODT paragraphs, headings, list items and
//! tables from their XML, PDF text through `pdf-extract`. A file that cannot
//! be converted is an error for that file alone.

use std::io::{Cursor, Read};

use quick_xml::events::Event;

/// What one file became.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub mime_type: &'static str,
    pub markdown: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("`{0}` files are not supported")]
    Unsupported(String),
    #[error("{0} conversion needs an image-to-text model, which this Hearth does not serve yet")]
    NeedsVision(&'static str),
    #[error("the file is not valid {kind}: {reason}")]
    Invalid { kind: &'static str, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Html,
    Xml,
    Csv,
    Sheet,
    Docx,
    Odt,
    Pdf,
    Image,
}

/// Extensions, their MIME types and how they convert (the types of the
/// AI Search spec; images wait for a vision model).
const TYPES: &[(&str, &str, Kind)] = &[
    ("txt", "text/plain", Kind::Text),
    ("rst", "text/x-rst", Kind::Text),
    ("log", "text/plain", Kind::Text),
    ("ini", "text/plain", Kind::Text),
    ("conf", "text/plain", Kind::Text),
    ("env", "text/plain", Kind::Text),
    ("properties", "text/plain", Kind::Text),
    ("gitignore", "text/plain", Kind::Text),
    ("editorconfig", "text/plain", Kind::Text),
    ("toml", "application/toml", Kind::Text),
    ("md", "text/markdown", Kind::Text),
    ("markdown", "text/markdown", Kind::Text),
    ("mdx", "text/markdown", Kind::Text),
    ("tex", "application/x-tex", Kind::Text),
    ("latex", "application/x-latex", Kind::Text),
    ("sh", "application/x-sh", Kind::Text),
    ("bat", "application/x-bat", Kind::Text),
    ("ps1", "text/plain", Kind::Text),
    ("sgml", "text/sgml", Kind::Text),
    ("json", "application/json", Kind::Text),
    ("yaml", "application/yaml", Kind::Text),
    ("yml", "application/yaml", Kind::Text),
    ("css", "text/css", Kind::Text),
    ("js", "text/javascript", Kind::Text),
    ("php", "application/x-httpd-php", Kind::Text),
    ("py", "text/x-python", Kind::Text),
    ("rb", "text/x-ruby", Kind::Text),
    ("java", "text/x-java", Kind::Text),
    ("c", "text/x-c", Kind::Text),
    ("cpp", "text/x-c++", Kind::Text),
    ("cxx", "text/x-c++", Kind::Text),
    ("h", "text/x-c", Kind::Text),
    ("hpp", "text/x-c++", Kind::Text),
    ("go", "text/x-go", Kind::Text),
    ("rs", "text/x-rust", Kind::Text),
    ("swift", "text/x-swift", Kind::Text),
    ("dart", "application/dart", Kind::Text),
    ("el", "text/x-emacs-lisp", Kind::Text),
    ("html", "text/html", Kind::Html),
    ("htm", "text/html", Kind::Html),
    ("xml", "application/xml", Kind::Xml),
    ("csv", "text/csv", Kind::Csv),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Kind::Sheet,
    ),
    (
        "xlsm",
        "application/vnd.ms-excel.sheet.macroenabled.12",
        Kind::Sheet,
    ),
    (
        "xlsb",
        "application/vnd.ms-excel.sheet.binary.macroenabled.12",
        Kind::Sheet,
    ),
    ("xls", "application/vnd.ms-excel", Kind::Sheet),
    ("et", "application/vnd.ms-excel", Kind::Sheet),
    (
        "ods",
        "application/vnd.oasis.opendocument.spreadsheet",
        Kind::Sheet,
    ),
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Kind::Docx,
    ),
    ("odt", "application/vnd.oasis.opendocument.text", Kind::Odt),
    ("pdf", "application/pdf", Kind::Pdf),
    ("jpeg", "image/jpeg", Kind::Image),
    ("jpg", "image/jpeg", Kind::Image),
    ("png", "image/png", Kind::Image),
    ("webp", "image/webp", Kind::Image),
    ("svg", "image/svg+xml", Kind::Image),
];

/// `(MIME type, extension)` of every type that converts here.
pub fn supported() -> Vec<(&'static str, &'static str)> {
    TYPES
        .iter()
        .filter(|(_, _, kind)| *kind != Kind::Image)
        .map(|(ext, mime, _)| (*mime, *ext))
        .collect()
}

fn kind_of(name: &str) -> Option<(&'static str, Kind)> {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map_or(lower.as_str(), |(_, e)| e);
    TYPES
        .iter()
        .find(|(e, _, _)| *e == ext)
        .map(|(_, mime, kind)| (*mime, *kind))
}

/// The MIME type Hearth reports for `name` (octet-stream when unknown).
pub fn mime_type(name: &str) -> &'static str {
    kind_of(name).map_or("application/octet-stream", |(m, _)| m)
}

fn invalid(kind: &'static str, reason: impl ToString) -> ConvertError {
    ConvertError::Invalid {
        kind,
        reason: reason.to_string(),
    }
}

fn utf8(bytes: &[u8], kind: &'static str) -> Result<String, ConvertError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid(kind, "it is not UTF-8 text"))
}

/// Converts one file, by its name's extension.
pub fn convert(name: &str, bytes: &[u8]) -> Result<Converted, ConvertError> {
    let (mime_type, kind) = kind_of(name).ok_or_else(|| {
        ConvertError::Unsupported(name.rsplit_once('.').map_or(name, |(_, e)| e).to_string())
    })?;
    let markdown = match kind {
        Kind::Text => utf8(bytes, "text")?,
        Kind::Html => htmd::convert(&utf8(bytes, "HTML")?).map_err(|e| invalid("HTML", e))?,
        Kind::Xml => format!("```xml\n{}\n```", utf8(bytes, "XML")?.trim_end()),
        Kind::Csv => csv_table(bytes)?,
        Kind::Sheet => sheets(bytes)?,
        Kind::Docx => office_text(bytes, "word/document.xml", Dialect::Docx)?,
        Kind::Odt => office_text(bytes, "content.xml", Dialect::Odt)?,
        Kind::Pdf => pdf(bytes)?,
        Kind::Image => return Err(ConvertError::NeedsVision("image")),
    };
    Ok(Converted {
        mime_type,
        markdown,
    })
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// Rows as a markdown table, the first row as its header.
fn table(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    if width == 0 {
        return String::new();
    }
    let line = |row: &Vec<String>| {
        let cells: Vec<String> = (0..width)
            .map(|i| cell(row.get(i).map_or("", String::as_str)))
            .collect();
        format!("| {} |", cells.join(" | "))
    };
    let mut out = vec![line(&rows[0])];
    out.push(format!("|{}", " --- |".repeat(width)));
    out.extend(rows[1..].iter().map(line));
    out.join("\n")
}

fn csv_table(bytes: &[u8]) -> Result<String, ConvertError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let rows = reader
        .records()
        .map(|r| r.map(|rec| rec.iter().map(str::to_string).collect::<Vec<_>>()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("CSV", e))?;
    Ok(table(&rows))
}

fn sheets(bytes: &[u8]) -> Result<String, ConvertError> {
    use calamine::Reader;
    let mut book = calamine::open_workbook_auto_from_rs(Cursor::new(bytes.to_vec()))
        .map_err(|e| invalid("spreadsheet", e))?;
    let mut out = Vec::new();
    for name in book.sheet_names() {
        let range = book
            .worksheet_range(&name)
            .map_err(|e| invalid("spreadsheet", e))?;
        let rows: Vec<Vec<String>> = range
            .rows()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        out.push(format!("## {name}\n\n{}", table(&rows)));
    }
    Ok(out.join("\n\n"))
}

#[derive(Clone, Copy)]
enum Dialect {
    Docx,
    Odt,
}

/// Paragraphs, headings, list items and tables of a word-processing file.
fn office_text(bytes: &[u8], part: &str, dialect: Dialect) -> Result<String, ConvertError> {
    let kind = match dialect {
        Dialect::Docx => "DOCX",
        Dialect::Odt => "ODT",
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| invalid(kind, e))?;
    let mut xml = String::new();
    archive
        .by_name(part)
        .map_err(|e| invalid(kind, format!("{part}: {e}")))?
        .read_to_string(&mut xml)
        .map_err(|e| invalid(kind, e))?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut blocks: Vec<String> = Vec::new();
    let mut para = String::new();
    let mut prefix = String::new();
    let mut in_text = matches!(dialect, Dialect::Odt);
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row: Vec<String> = Vec::new();
    // Paragraphs of the table cell being read: a cell is one table cell
    // however many paragraphs it holds.
    let mut cell_parts: Vec<String> = Vec::new();
    let mut table_depth = 0usize;
    // ODT paragraph styles and their parents: a heading may be a `text:p`
    // whose automatic style derives from `Heading_20_<n>`.
    let mut parents: std::collections::HashMap<String, String> = Default::default();
    loop {
        let event = reader.read_event().map_err(|e| invalid(kind, e))?;
        match (&event, dialect) {
            (Event::Eof, _) => break,
            (Event::Start(e), Dialect::Docx) | (Event::Empty(e), Dialect::Docx) => {
                match e.name().as_ref() {
                    "w:t" => in_text = true,
                    "w:tab" => para.push('\t'),
                    "w:br" => para.push('\n'),
                    "w:tbl" => table_depth += 1,
                    "w:tr" => row.clear(),
                    "w:pStyle" => {
                        for a in e.attributes().flatten() {
                            if a.key.as_ref() == "w:val" {
                                let style = a.value.to_lowercase();
                                if let Some(level) = style
                                    .strip_prefix("heading")
                                    .and_then(|l| l.parse::<usize>().ok())
                                {
                                    prefix = format!("{} ", "#".repeat(level.clamp(1, 6)));
                                } else if style == "title" {
                                    prefix = "# ".into();
                                } else if style.starts_with("list") {
                                    prefix = "- ".into();
                                }
                            }
                        }
                    }
                    "w:numPr" if prefix.is_empty() => prefix = "- ".into(),
                    _ => {}
                }
            }
            (Event::Start(e), Dialect::Odt) | (Event::Empty(e), Dialect::Odt)
                if e.name().as_ref() == "style:style" =>
            {
                let attr = |key: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == key)
                        .map(|a| a.value.into_owned())
                };
                if let (Some(name), Some(parent)) =
                    (attr("style:name"), attr("style:parent-style-name"))
                {
                    parents.insert(name, parent);
                }
            }
            (Event::Start(e), Dialect::Odt) => match e.name().as_ref() {
                "text:p" => {
                    let style = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == "text:style-name")
                        .map(|a| a.value.into_owned())
                        .unwrap_or_default();
                    let parent = parents.get(&style).cloned().unwrap_or_default();
                    for s in [style.as_str(), parent.as_str()] {
                        if let Some(level) = s
                            .strip_prefix("Heading_20_")
                            .and_then(|l| l.parse::<usize>().ok())
                        {
                            prefix = format!("{} ", "#".repeat(level.clamp(1, 6)));
                        } else if s == "Title" && prefix.is_empty() {
                            prefix = "# ".into();
                        }
                    }
                }
                "text:h" => {
                    let level = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == "text:outline-level")
                        .and_then(|a| a.value.parse::<usize>().ok())
                        .unwrap_or(1);
                    prefix = format!("{} ", "#".repeat(level.clamp(1, 6)));
                }
                "text:list-item" => prefix = "- ".into(),
                "table:table" => table_depth += 1,
                "table:table-row" => row.clear(),
                _ => {}
            },
            (Event::Empty(e), Dialect::Odt) => match e.name().as_ref() {
                "text:tab" => para.push('\t'),
                "text:line-break" => para.push('\n'),
                "text:s" => para.push(' '),
                _ => {}
            },
            (Event::Text(t), _) if in_text => para.push_str(&t.xml10_content()),
            (Event::GeneralRef(r), _) if in_text => {
                let entity = format!("&{};", &**r);
                para.push_str(&quick_xml::escape::unescape(&entity).map_err(|e| invalid(kind, e))?);
            }
            (Event::End(e), _) => match (e.name().as_ref(), dialect) {
                ("w:t", Dialect::Docx) => in_text = false,
                ("w:p", Dialect::Docx) | ("text:p" | "text:h", Dialect::Odt) => {
                    let text = std::mem::take(&mut para);
                    let text = text.trim();
                    if table_depth > 0 {
                        if !text.is_empty() {
                            cell_parts.push(text.to_string());
                        }
                    } else if !text.is_empty() {
                        blocks.push(format!("{prefix}{text}"));
                    }
                    prefix.clear();
                }
                ("w:tc", Dialect::Docx) | ("table:table-cell", Dialect::Odt) => {
                    row.push(std::mem::take(&mut cell_parts).join(" "));
                }
                ("w:tr", Dialect::Docx) | ("table:table-row", Dialect::Odt) => {
                    rows.push(std::mem::take(&mut row));
                }
                ("w:tbl", Dialect::Docx) | ("table:table", Dialect::Odt) => {
                    table_depth = table_depth.saturating_sub(1);
                    if table_depth == 0 {
                        blocks.push(table(&std::mem::take(&mut rows)));
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(blocks.join("\n\n"))
}

fn pdf(bytes: &[u8]) -> Result<String, ConvertError> {
    // pdf-extract panics on some malformed files; one bad file must not
    // take the server (or an indexing job) down.
    let owned = bytes.to_vec();
    let text = std::panic::catch_unwind(move || pdf_extract::extract_text_from_mem(&owned))
        .map_err(|_| invalid("PDF", "the file is damaged"))?
        .map_err(|e| invalid("PDF", e))?;
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    Ok(paragraphs.join("\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_and_unknown_types_are_named() {
        let c = convert("notes.TXT", b"hello\nworld").unwrap();
        assert_eq!(c.markdown, "hello\nworld");
        assert_eq!(c.mime_type, "text/plain");
        let e = convert("movie.mkv", b"..").unwrap_err();
        assert!(e.to_string().contains("`mkv`"), "{e}");
        assert!(matches!(
            convert("a.png", b"x").unwrap_err(),
            ConvertError::NeedsVision(_)
        ));
        assert!(matches!(
            convert("bad.txt", &[0xff, 0xfe, 0x00]).unwrap_err(),
            ConvertError::Invalid { .. }
        ));
    }

    #[test]
    fn html_and_csv_become_markdown() {
        let c = convert("a.html", b"<h1>Title</h1><p>Some <b>bold</b> text.</p>").unwrap();
        assert!(c.markdown.contains("# Title"), "{}", c.markdown);
        assert!(c.markdown.contains("**bold**"), "{}", c.markdown);
        let c = convert(
            "t.csv",
            b"city,country\nParis,France\n\"Rome, old\",Italy\n",
        )
        .unwrap();
        assert_eq!(
            c.markdown,
            "| city | country |\n| --- | --- |\n| Paris | France |\n| Rome, old | Italy |"
        );
    }

    #[test]
    fn damaged_documents_are_errors_not_panics() {
        for name in ["x.pdf", "x.docx", "x.xlsx", "x.odt"] {
            let e = convert(name, b"definitely not a document").unwrap_err();
            assert!(matches!(e, ConvertError::Invalid { .. }), "{name}: {e}");
        }
    }
}

//! Keeps the configuration reference from drifting away from the code.
//!
//! - Every key of the raw config types in `src/config/raw.rs` (its structs
//!   and enum variants, parsed with `syn`, with their serde attributes) must
//!   be documented in its table in
//!   `docs/configuration.md`, and every key documented there must exist in
//!   the code. A table is found by the `<!-- config-table: PATH, … -->`
//!   comment right above it; a row's key is the first backticked span of its
//!   first cell.
//! - Every ```` ```toml ```` block in the docs and the README must be a
//!   complete config that `credbroker::config::parse` accepts; partial
//!   examples are fenced ```` ```toml-snippet ```` and must still be TOML.
//! - A few documented defaults are compared with the code's constants.
//!
//! The checker is a plain function of the two texts, so the tests at the
//! bottom run it on altered copies of `src/config/raw.rs` and of the docs to
//! show that it catches each kind of drift.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The clone under test, read at run time (see `support::services::repo`).
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- Rust source: the raw types, read with syn -----------------------------

/// Where the raw stage is: the serde types, exactly the TOML's shape.
const RAW_RS: &str = "src/config/raw.rs";

/// One `name` or `name = "value"` inside `#[serde(…)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SerdeArg {
    name: String,
    value: Option<String>,
    /// `name(…)`: a nested form this checker does not understand.
    nested: bool,
}

#[derive(Debug, Clone)]
struct Field {
    ident: String,
    /// Every identifier in the field's type (`Option<BTreeMap<String, RawX>>`
    /// gives Option, BTreeMap, String, RawX).
    ty: Vec<String>,
    serde: Vec<SerdeArg>,
}

#[derive(Debug, Clone)]
enum VariantShape {
    Unit,
    Tuple,
    Named(Vec<Field>),
}

#[derive(Debug, Clone)]
struct Variant {
    ident: String,
    shape: VariantShape,
    serde: Vec<SerdeArg>,
}

#[derive(Debug, Clone)]
enum ItemKind {
    Struct(Vec<Field>),
    /// A tuple or unit struct.
    OtherStruct,
    Enum(Vec<Variant>),
}

#[derive(Debug, Clone)]
struct Item {
    name: String,
    kind: ItemKind,
    serde: Vec<SerdeArg>,
}

/// The serde arguments among `attrs`.
fn serde_args(attrs: &[syn::Attribute]) -> Vec<SerdeArg> {
    let mut args = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            let name = meta
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            let mut arg = SerdeArg {
                name,
                value: None,
                nested: false,
            };
            if meta.input.peek(syn::Token![=]) {
                let value = meta.value()?;
                if let Ok(lit) = value.parse::<syn::LitStr>() {
                    arg.value = Some(lit.value());
                } else {
                    value.parse::<syn::Expr>()?;
                }
            } else if meta.input.peek(syn::token::Paren) {
                arg.nested = true;
                meta.parse_nested_meta(|inner| {
                    if inner.input.peek(syn::Token![=]) {
                        inner.value()?.parse::<syn::Expr>()?;
                    }
                    Ok(())
                })?;
            }
            args.push(arg);
            Ok(())
        });
    }
    args
}

/// Every identifier in `ty`.
fn type_idents(ty: &syn::Type) -> Vec<String> {
    struct Idents(Vec<String>);
    impl<'a> syn::visit::Visit<'a> for Idents {
        fn visit_path_segment(&mut self, seg: &'a syn::PathSegment) {
            self.0.push(seg.ident.to_string());
            syn::visit::visit_path_segment(self, seg);
        }
    }
    let mut found = Idents(Vec::new());
    syn::visit::Visit::visit_type(&mut found, ty);
    found.0
}

fn named_fields(fields: &syn::FieldsNamed) -> Vec<Field> {
    fields
        .named
        .iter()
        .map(|f| Field {
            // `r#type` is written `type`.
            ident: syn::ext::IdentExt::unraw(f.ident.as_ref().expect("named")).to_string(),
            ty: type_idents(&f.ty),
            serde: serde_args(&f.attrs),
        })
        .collect()
}

/// The structs and enums of `raw_rs`, parsed by syn.
fn items(raw_rs: &str) -> Result<Vec<Item>, String> {
    let file = syn::parse_file(raw_rs).map_err(|e| format!("{RAW_RS}: not Rust: {e}"))?;
    let mut items = Vec::new();
    for item in file.items {
        match item {
            syn::Item::Struct(s) => items.push(Item {
                name: s.ident.to_string(),
                kind: match &s.fields {
                    syn::Fields::Named(named) => ItemKind::Struct(named_fields(named)),
                    _ => ItemKind::OtherStruct,
                },
                serde: serde_args(&s.attrs),
            }),
            syn::Item::Enum(e) => items.push(Item {
                name: e.ident.to_string(),
                kind: ItemKind::Enum(
                    e.variants
                        .iter()
                        .map(|v| Variant {
                            ident: v.ident.to_string(),
                            shape: match &v.fields {
                                syn::Fields::Named(named) => {
                                    VariantShape::Named(named_fields(named))
                                }
                                syn::Fields::Unnamed(_) => VariantShape::Tuple,
                                syn::Fields::Unit => VariantShape::Unit,
                            },
                            serde: serde_args(&v.attrs),
                        })
                        .collect(),
                ),
                serde: serde_args(&e.attrs),
            }),
            _ => {}
        }
    }
    Ok(items)
}

fn serde_value<'a>(args: &'a [SerdeArg], name: &str) -> Option<&'a str> {
    args.iter()
        .find(|a| a.name == name)
        .and_then(|a| a.value.as_deref())
}

fn has_serde(args: &[SerdeArg], name: &str) -> bool {
    args.iter().any(|a| a.name == name)
}

// ---- from the raw types to TOML tables -------------------------------------

fn to_case(ident: &str, rule: &str) -> Option<String> {
    let words = |sep: &str, lower: bool| {
        let mut s = String::new();
        for (i, c) in ident.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                s.push_str(sep);
            }
            if lower {
                s.extend(c.to_lowercase());
            } else {
                s.push(c);
            }
        }
        s
    };
    Some(match rule {
        "snake_case" => words("_", true),
        "kebab-case" => words("-", true),
        "lowercase" => ident.to_lowercase(),
        "UPPERCASE" => ident.to_uppercase(),
        "SCREAMING_SNAKE_CASE" => words("_", true).to_uppercase(),
        _ => return None,
    })
}

/// The TOML key a field is written as, or `None` when serde skips it.
fn field_key(item: &str, f: &Field, problems: &mut Vec<String>) -> Option<String> {
    for a in &f.serde {
        match a.name.as_str() {
            "default" | "deserialize_with" | "with" | "serialize_with" | "skip_serializing_if"
            | "skip_serializing" | "bound" => {}
            "skip" | "skip_deserializing" => return None,
            "rename" if !a.nested && a.value.is_some() => {}
            other => problems.push(format!(
                "{RAW_RS}: {item}.{}: #[serde({other}…)] is not understood by tests/docs.rs; teach it",
                f.ident
            )),
        }
    }
    Some(
        serde_value(&f.serde, "rename")
            .map(str::to_owned)
            .unwrap_or_else(|| f.ident.clone()),
    )
}

/// Table path → the keys it accepts.
type Tables = BTreeMap<String, BTreeSet<String>>;

/// The keys of every TOML table the code accepts.
///
/// Paths are dotted with `NAME` for user-chosen names, e.g.
/// `credentials.NAME.rotation`; a variant of an internally tagged enum adds
/// `TAG=value`, e.g. `stores.NAME type=vault`. The top-level table is
/// `(top level)`.
fn code_tables(raw_rs: &str) -> Result<(Tables, Vec<String>), String> {
    let items: BTreeMap<String, Item> = items(raw_rs)?
        .into_iter()
        .filter(|i| i.name.starts_with("Raw"))
        .map(|i| (i.name.clone(), i))
        .collect();
    if !items.contains_key("RawConfig") {
        return Err(format!("{RAW_RS}: no `struct RawConfig` in it"));
    }
    let mut tables = Tables::new();
    let mut problems = Vec::new();
    let mut reached = BTreeSet::new();
    visit(
        &items,
        "RawConfig",
        TOP,
        &mut tables,
        &mut problems,
        &mut reached,
        0,
    );
    for name in items.keys() {
        if !reached.contains(name) {
            problems.push(format!(
                "{RAW_RS}: {name} is in the raw stage but not reachable from RawConfig"
            ));
        }
    }
    Ok((tables, problems))
}

const TOP: &str = "(top level)";

fn join(path: &str, key: &str) -> String {
    if path == TOP {
        return key.to_owned();
    }
    // `stores.NAME type=vault` + `auth` → `stores.NAME.auth`
    let base = path.split(' ').next().unwrap_or(path);
    format!("{base}.{key}")
}

/// Whether the enum is a plain value (no named fields anywhere): then a
/// field of its type is a leaf key, not a table.
fn is_value_enum(variants: &[Variant]) -> bool {
    variants
        .iter()
        .all(|v| !matches!(v.shape, VariantShape::Named(_)))
}

fn visit(
    items: &BTreeMap<String, Item>,
    name: &str,
    path: &str,
    tables: &mut Tables,
    problems: &mut Vec<String>,
    reached: &mut BTreeSet<String>,
    depth: usize,
) {
    if depth > 16 {
        problems.push(format!("{RAW_RS}: {name}: types nest too deep (a cycle?)"));
        return;
    }
    reached.insert(name.to_owned());
    let item = &items[name];
    let fields_into = |fields: &[Field],
                       owner: &str,
                       table: &str,
                       keys: &mut BTreeSet<String>,
                       children: &mut Vec<(String, String)>,
                       problems: &mut Vec<String>| {
        for f in fields {
            let Some(key) = field_key(owner, f, problems) else {
                continue;
            };
            keys.insert(key.clone());
            let idents: Vec<&str> = f.ty.iter().map(String::as_str).collect();
            let map = idents
                .iter()
                .any(|i| matches!(*i, "BTreeMap" | "HashMap" | "IndexMap"));
            for child in idents.iter().filter(|i| items.contains_key(**i)) {
                let mut child_path = join(table, &key);
                if map {
                    child_path.push_str(".NAME");
                }
                children.push((child.to_string(), child_path));
            }
        }
    };
    let mut children = Vec::new();
    match &item.kind {
        ItemKind::OtherStruct => problems.push(format!(
            "{RAW_RS}: {name} is a tuple or unit struct; tests/docs.rs cannot map it to a table"
        )),
        ItemKind::Struct(fields) => {
            if !has_serde(&item.serde, "deny_unknown_fields") {
                problems.push(format!(
                    "{RAW_RS}: {name} lacks #[serde(deny_unknown_fields)], but the docs promise that unknown keys are errors"
                ));
            }
            if let Some(rule) = serde_value(&item.serde, "rename_all")
                && fields
                    .iter()
                    .any(|f| to_case(&f.ident, rule).as_deref() != Some(f.ident.as_str()))
            {
                problems.push(format!(
                    "{RAW_RS}: {name}: rename_all = {rule:?} on fields is not understood by tests/docs.rs; teach it"
                ));
            }
            let mut keys = BTreeSet::new();
            fields_into(fields, name, path, &mut keys, &mut children, problems);
            tables.entry(path.to_owned()).or_default().extend(keys);
        }
        ItemKind::Enum(variants) if is_value_enum(variants) => {
            // A value such as `socket_mode` (a string or a number): a leaf.
        }
        ItemKind::Enum(variants) => {
            let Some(tag) = serde_value(&item.serde, "tag") else {
                problems.push(format!(
                    "{RAW_RS}: {name} has struct variants but no #[serde(tag = \"…\")]; tests/docs.rs only maps internally tagged enums"
                ));
                return;
            };
            if has_serde(&item.serde, "content") || has_serde(&item.serde, "untagged") {
                problems.push(format!(
                    "{RAW_RS}: {name}: adjacently tagged or untagged struct variants are not understood by tests/docs.rs"
                ));
            }
            if !has_serde(&item.serde, "deny_unknown_fields") {
                problems.push(format!(
                    "{RAW_RS}: {name} lacks #[serde(deny_unknown_fields)], but the docs promise that unknown keys are errors"
                ));
            }
            let rule = serde_value(&item.serde, "rename_all");
            for v in variants {
                let value = match (serde_value(&v.serde, "rename"), rule) {
                    (Some(r), _) => r.to_owned(),
                    (None, Some(rule)) => match to_case(&v.ident, rule) {
                        Some(s) => s,
                        None => {
                            problems.push(format!(
                                "{RAW_RS}: {name}: rename_all = {rule:?} is not understood by tests/docs.rs"
                            ));
                            v.ident.clone()
                        }
                    },
                    (None, None) => v.ident.clone(),
                };
                let table = format!("{path} {tag}={value}");
                let mut keys = BTreeSet::from([tag.to_owned()]);
                match &v.shape {
                    VariantShape::Unit => {}
                    VariantShape::Tuple => problems.push(format!(
                        "{RAW_RS}: {name}::{}: a tuple variant in a tagged enum is not understood by tests/docs.rs",
                        v.ident
                    )),
                    VariantShape::Named(fields) => {
                        let owner = format!("{name}::{}", v.ident);
                        fields_into(fields, &owner, &table, &mut keys, &mut children, problems);
                    }
                }
                tables.entry(table).or_default().extend(keys);
            }
        }
    }
    for (child, child_path) in children {
        visit(
            items,
            &child,
            &child_path,
            tables,
            problems,
            reached,
            depth + 1,
        );
    }
}

// ---- the docs: marked tables -----------------------------------------------

/// One documented key: its row's cells (the key cell first).
#[derive(Debug, Clone)]
struct Row {
    key: String,
    cells: Vec<String>,
}

const MARKER: &str = "<!-- config-table:";

/// Table path → its rows, from every `<!-- config-table: … -->` table.
fn doc_tables(doc: &str) -> (BTreeMap<String, Vec<Row>>, Vec<String>) {
    let mut tables: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut problems = Vec::new();
    let lines: Vec<&str> = doc.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        let Some(rest) = line.strip_prefix(MARKER) else {
            continue;
        };
        let Some(paths) = rest.trim().strip_suffix("-->") else {
            problems.push(format!(
                "docs/configuration.md:{i}: a config-table marker must fit on one line"
            ));
            continue;
        };
        let paths: Vec<String> = paths
            .split(',')
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|p| !p.is_empty())
            .collect();
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        if i >= lines.len() || !lines[i].trim_start().starts_with('|') {
            problems.push(format!(
                "docs/configuration.md:{i}: the config-table marker for {paths:?} is not followed by a table"
            ));
            continue;
        }
        let mut rows = Vec::new();
        let mut n = 0;
        while i < lines.len() && lines[i].trim_start().starts_with('|') {
            let row = lines[i].trim();
            i += 1;
            n += 1;
            if n <= 2 {
                continue; // header and separator
            }
            let cells = split_row(row);
            let first = cells.first().map(String::as_str).unwrap_or("");
            match first_code_span(first) {
                Some(key) => rows.push(Row { key, cells }),
                None => problems.push(format!(
                    "docs/configuration.md:{i}: a row of {paths:?} has no `key` in its first cell"
                )),
            }
        }
        for p in &paths {
            tables
                .entry(p.clone())
                .or_default()
                .extend(rows.iter().cloned());
        }
    }
    (tables, problems)
}

/// The cells of a markdown table row; `\|` does not split.
fn split_row(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells.into_iter().map(|c| c.trim().to_owned()).collect()
}

fn first_code_span(cell: &str) -> Option<String> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    let key = cell[start..start + len].trim();
    (!key.is_empty()).then(|| key.to_owned())
}

// ---- the checker -----------------------------------------------------------

/// Every way `doc` (docs/configuration.md) and `config_rs` (src/config/raw.rs)
/// disagree about config keys; empty when they agree.
fn check_keys(config_rs: &str, doc: &str) -> Vec<String> {
    let (code, mut problems) = match code_tables(config_rs) {
        Ok(t) => t,
        Err(e) => return vec![e],
    };
    let (docs, doc_problems) = doc_tables(doc);
    problems.extend(doc_problems);
    for (path, keys) in &code {
        let Some(rows) = docs.get(path) else {
            problems.push(format!(
                "{path}: no table in docs/configuration.md (put one under `<!-- config-table: {path} -->`) for its keys {keys:?}"
            ));
            continue;
        };
        let documented: BTreeSet<String> = rows.iter().map(|r| r.key.clone()).collect();
        for key in keys.difference(&documented) {
            problems.push(format!(
                "{path}: `{key}` is a config key in {RAW_RS} but is not documented in docs/configuration.md"
            ));
        }
        for key in documented.difference(keys) {
            problems.push(format!(
                "{path}: `{key}` is documented in docs/configuration.md but {RAW_RS} has no such key"
            ));
        }
    }
    for path in docs.keys() {
        if !code.contains_key(path) {
            problems.push(format!(
                "{path}: docs/configuration.md documents this table but {RAW_RS} has none like it"
            ));
        }
    }
    problems
}

/// One fenced code block.
#[derive(Debug)]
struct Fence {
    lang: String,
    line: usize,
    text: String,
}

fn fences(markdown: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, String, String)> = None; // lang, line, fence, text
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
                if ticks >= 3 {
                    let fence = "`".repeat(ticks);
                    let lang = trimmed[ticks..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    open = Some((lang, n + 1, fence, String::new()));
                }
            }
            Some((lang, start, fence, text)) => {
                if trimmed.starts_with(fence.as_str())
                    && trimmed.trim_start_matches('`').trim().is_empty()
                {
                    out.push(Fence {
                        lang: std::mem::take(lang),
                        line: *start,
                        text: std::mem::take(text),
                    });
                    open = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    out
}

/// Problems with the TOML examples of `markdown` (named `file`): each
/// ```toml block must be a complete, valid config; each ```toml-snippet
/// must be TOML.
fn check_examples(file: &str, markdown: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for f in fences(markdown) {
        match f.lang.as_str() {
            "toml" => {
                // A path that exists nowhere: parsing never touches the files a config names.
                let config = Path::new("/etc/credbroker/config.toml");
                if let Err(e) = credbroker::config::parse(config, &f.text) {
                    problems.push(format!(
                        "{file}:{}: this ```toml block is not a valid config (fence partial examples as ```toml-snippet):\n{e}",
                        f.line
                    ));
                }
            }
            "toml-snippet" => {
                if let Err(e) = f.text.parse::<toml::Table>() {
                    problems.push(format!(
                        "{file}:{}: this ```toml-snippet is not TOML: {e}",
                        f.line
                    ));
                }
            }
            _ => {}
        }
    }
    problems
}

/// The default column of `path`'s row for `key`, without backticks and quotes.
fn documented_default(docs: &BTreeMap<String, Vec<Row>>, path: &str, key: &str) -> Option<String> {
    let row = docs.get(path)?.iter().find(|r| r.key == key)?;
    let cell = row.cells.get(2)?;
    Some(
        first_code_span(cell)
            .unwrap_or_else(|| cell.clone())
            .trim_matches('"')
            .to_owned(),
    )
}

fn check_defaults(doc: &str) -> Vec<String> {
    use credbroker::config::*;
    let (docs, _) = doc_tables(doc);
    let mut problems = Vec::new();
    let mut expect = |path: &str, key: &str, want: String, same: &dyn Fn(&str) -> bool| {
        match documented_default(&docs, path, key) {
            Some(d) if same(&d) => {}
            other => problems.push(format!(
                "{path}: `{key}`: docs/configuration.md gives the default {other:?}, the code has {want:?}"
            )),
        }
    };
    let duration =
        |want: std::time::Duration| move |d: &str| humantime::parse_duration(d).ok() == Some(want);
    expect(
        "defaults",
        "lease_ttl",
        format!("{DEFAULT_LEASE_TTL:?}"),
        &duration(DEFAULT_LEASE_TTL),
    );
    expect(
        "defaults",
        "refresh_interval",
        format!("{DEFAULT_REFRESH_INTERVAL:?}"),
        &duration(DEFAULT_REFRESH_INTERVAL),
    );
    expect(
        "defaults",
        "max_stale",
        format!("{DEFAULT_MAX_STALE:?}"),
        &duration(DEFAULT_MAX_STALE),
    );
    expect("server", "socket", DEFAULT_SOCKET.into(), &|d| {
        d == DEFAULT_SOCKET
    });
    expect("twilio", "api_base", DEFAULT_API_BASE.into(), &|d| {
        d == DEFAULT_API_BASE
    });
    expect("twilio", "iam_base", DEFAULT_IAM_BASE.into(), &|d| {
        d == DEFAULT_IAM_BASE
    });
    expect(
        "twilio",
        "accounts_base",
        DEFAULT_ACCOUNTS_BASE.into(),
        &|d| d == DEFAULT_ACCOUNTS_BASE,
    );

    // What an empty config yields, against the documented defaults.
    let minimal =
        parse(Path::new("/etc/credbroker/config.toml"), "").expect("an empty config is valid");
    let mode = format!("{:04o}", minimal.server.socket_mode);
    expect("server", "socket_mode", mode.clone(), &|d| d == mode);
    let lock = minimal.server.lock_memory.to_string();
    expect("server", "lock_memory", lock.clone(), &|d| d == lock);
    let root = minimal.server.allow_root.to_string();
    expect("server", "allow_root", root.clone(), &|d| d == root);
    problems
}

fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

// ---- the tests on the real files -------------------------------------------

#[test]
fn every_config_key_is_documented_and_every_documented_key_exists() {
    let problems = check_keys(&read(RAW_RS), &read("docs/configuration.md"));
    report("docs/configuration.md vs src/config/raw.rs", &problems);
}

#[test]
fn the_code_has_the_tables_the_docs_expect() {
    // A sanity check of the parser itself on the real file: if this fails,
    // the checker above may be passing for the wrong reason.
    let (tables, problems) = code_tables(&read(RAW_RS)).unwrap();
    report(RAW_RS, &problems);
    for path in [
        "(top level)",
        "server",
        "server.admin",
        "defaults",
        "stores.NAME type=file",
        "stores.NAME type=vault",
        "stores.NAME.auth method=token",
        "stores.NAME.auth method=approle",
        "stores.NAME.auth method=kubernetes",
        "stores.NAME type=aws_secrets_manager",
        "stores.NAME type=gcp_secret_manager",
        "twilio",
        "credentials.NAME",
        "credentials.NAME.allow",
        "credentials.NAME.rotation",
        "credentials.NAME.access_tokens",
    ] {
        assert!(
            tables.contains_key(path),
            "{path} missing from {:?}",
            tables.keys()
        );
    }
    assert!(tables["server"].contains("socket_mode"));
    assert!(tables["stores.NAME type=vault"].contains("type"));
    assert!(tables["credentials.NAME"].contains("max_live_keys"));
}

#[test]
fn documented_defaults_match_the_code() {
    report(
        "defaults in docs/configuration.md",
        &check_defaults(&read("docs/configuration.md")),
    );
}

#[test]
fn toml_examples_in_the_docs_and_readme_are_valid_configs() {
    let mut problems = Vec::new();
    let mut complete = 0;
    for file in [
        "docs/configuration.md",
        "docs/operations.md",
        "docs/security.md",
        "README.md",
    ] {
        let Ok(text) = std::fs::read_to_string(root().join(file)) else {
            if file == "docs/configuration.md" || file == "README.md" {
                problems.push(format!("{file}: missing"));
            }
            continue;
        };
        complete += fences(&text).iter().filter(|f| f.lang == "toml").count();
        problems.extend(check_examples(file, &text));
    }
    report("TOML examples", &problems);
    assert!(
        complete >= 1,
        "docs/configuration.md should have a complete ```toml example"
    );
}

#[test]
fn the_example_config_is_valid() {
    // The README's first command runs this file: it must exist and load.
    let path = root().join("examples/config.toml");
    credbroker::config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

// ---- the checker on altered copies: it catches each kind of drift ----------

/// `text` with `insertion` on a new line after the first line containing
/// `anchor`.
fn insert_after(text: &str, anchor: &str, insertion: &str) -> String {
    let at = text
        .find(anchor)
        .unwrap_or_else(|| panic!("anchor {anchor:?} not found: update this test"));
    let eol = at + text[at..].find('\n').expect("a line end");
    format!("{}\n{insertion}{}", &text[..eol], &text[eol..])
}

/// Problems that `altered` has and `original` has not, so that these tests
/// test the checker even while the real files drift.
fn new_problems(original: &[String], altered: &[String]) -> Vec<String> {
    altered
        .iter()
        .filter(|p| !original.contains(p))
        .cloned()
        .collect()
}

fn baseline() -> (String, String, Vec<String>) {
    let config = read(RAW_RS);
    let doc = read("docs/configuration.md");
    let problems = check_keys(&config, &doc);
    (config, doc, problems)
}

#[test]
fn checker_catches_a_field_added_without_docs() {
    let (config, doc, before) = baseline();
    let altered = insert_after(
        &config,
        "struct RawServer {",
        "    dummy_undocumented: Option<String>,",
    );
    let found = new_problems(&before, &check_keys(&altered, &doc));
    assert_eq!(
        found,
        vec!["server: `dummy_undocumented` is a config key in src/config/raw.rs but is not documented in docs/configuration.md".to_owned()],
    );

    // The same inside an enum variant, and in a struct reached through two paths.
    let altered = insert_after(
        &config,
        "    Kubernetes {",
        "        dummy_role_file: Option<String>,",
    );
    let found = new_problems(&before, &check_keys(&altered, &doc));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("stores.NAME.auth method=kubernetes: `dummy_role_file`"),
        "{found:?}"
    );

    let altered = insert_after(
        &config,
        "struct RawAllow {",
        "    #[serde(default)]\n    pids: Vec<u32>,",
    );
    let found = new_problems(&before, &check_keys(&altered, &doc));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.iter().any(|p| p.starts_with("server.admin: `pids`")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("credentials.NAME.allow: `pids`")),
        "{found:?}"
    );
}

#[test]
fn checker_catches_a_new_store_type_without_a_table() {
    let (config, doc, before) = baseline();
    let altered = insert_after(
        &config,
        "enum RawStore {",
        "    AzureKeyVault {\n        vault_url: String,\n    },",
    );
    let found = new_problems(&before, &check_keys(&altered, &doc));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("stores.NAME type=azure_key_vault: no table"),
        "{found:?}"
    );
}

#[test]
fn checker_catches_stale_and_renamed_keys() {
    let (config, doc, before) = baseline();
    // A documented key that the code no longer has.
    let altered_doc = doc.replacen("| `lock_memory` |", "| `lock_memory_old` |", 1);
    assert_ne!(
        altered_doc, doc,
        "the lock_memory row moved: update this test"
    );
    let found = new_problems(&before, &check_keys(&config, &altered_doc));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("server: `lock_memory` is a config key"))
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("server: `lock_memory_old` is documented"))
    );

    // A serde rename is what users write, so it is what must be documented.
    let altered = config.replacen(
        "    pub(super) socket: Option<String>,",
        "    #[serde(rename = \"listen\")]\n    pub(super) socket: Option<String>,",
        1,
    );
    assert_ne!(altered, config, "RawServer.socket moved: update this test");
    let found = new_problems(&before, &check_keys(&altered, &doc));
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("server: `listen` is a config key")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("server: `socket` is documented")),
        "{found:?}"
    );

    // A table documented for code that is gone.
    let altered_doc = doc.replacen(
        "<!-- config-table: twilio -->",
        "<!-- config-table: twilio, telnyx -->",
        1,
    );
    let found = new_problems(&before, &check_keys(&config, &altered_doc));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("telnyx: docs/configuration.md documents this table"),
        "{found:?}"
    );
}

#[test]
fn checker_insists_on_deny_unknown_fields() {
    let (config, doc, before) = baseline();
    let altered = config.replacen(
        "#[serde(deny_unknown_fields)]\npub(super) struct RawDefaults",
        "pub(super) struct RawDefaults",
        1,
    );
    assert_ne!(
        altered, config,
        "RawDefaults' attributes moved: update this test"
    );
    let found = new_problems(&before, &check_keys(&altered, &doc));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("RawDefaults lacks #[serde(deny_unknown_fields)]"),
        "{found:?}"
    );
}

#[test]
fn checker_needs_raw_config_and_rust() {
    let doc = read("docs/configuration.md");
    assert_eq!(
        check_keys("struct RawServer {}", &doc),
        vec!["src/config/raw.rs: no `struct RawConfig` in it".to_owned()]
    );
    let broken = check_keys("struct RawConfig {", &doc);
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(
        broken[0].starts_with("src/config/raw.rs: not Rust:"),
        "{broken:?}"
    );
}

#[test]
fn example_checker_tells_configs_from_snippets() {
    let md = "\
```toml
[stores.f]
type = \"file\"
path = \"s.json\"
[credentials.a]
store = \"f\"
path = \"a\"
```

```toml
[credentials.a]
store = \"nowhere\"
path = \"a\"
```

```toml-snippet
[stores.f]
type = \"file\"
```

```toml-snippet
not = [toml
```

```sh
not toml either, and not checked
```
";
    let problems = check_examples("x.md", md);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("x.md:10: this ```toml block is not a valid config"),
        "{problems:?}"
    );
    assert!(
        problems[0].contains("there is no `nowhere`"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("x.md:21: this ```toml-snippet is not TOML"),
        "{problems:?}"
    );
}

#[test]
fn parser_ignores_comments_and_strings() {
    let src = r#"
/// A doc comment mentioning `fake: Option<String>,`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    // a: String, (commented out)
    /* b: String, */
    #[serde(default, rename = "real-key")]
    r#type: Option<RawValue>,
    text: Option<String>, // "trailing: String,"
}
#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Text(String),
    Number(i64),
}
"#;
    let (tables, problems) = code_tables(src).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        tables["(top level)"],
        BTreeSet::from(["real-key".to_owned(), "text".to_owned()])
    );
    assert_eq!(tables.len(), 1, "a value enum is not a table: {tables:?}");
}

//! The field mapping: which model column feeds which Attentive attribute.
//!
//! [`Mapping`] is what a config describes; [`Mapping::bind`] checks it against the model's
//! columns and yields a [`BoundMapping`], the validated form the planner works with.

use std::fmt;

/// The kind of identifier that matches a model row to an existing Attentive contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// An email address, matched lower-cased.
    Email,
    /// A phone number, matched in E.164 form (`+14155550100`).
    Phone,
}

impl IdentifierKind {
    /// `email` or `phone`, as configs and Attentive's bodies name it.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
        }
    }
}

macro_rules! standard_fields {
    ($($variant:ident => $name:literal;)+) => {
        /// The 19 standard profile fields Attentive supports (v2 user attributes).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(missing_docs)] // the variants are the config names `name()` gives
        pub enum StandardField { $($variant,)+ }

        impl StandardField {
            /// Every standard field, in a fixed order.
            pub const ALL: [StandardField; 19] = [$(StandardField::$variant,)+];

            /// The name used in config files (`first_name`).
            pub fn name(self) -> &'static str {
                match self { $(StandardField::$variant => $name,)+ }
            }

        }
    };
}

standard_fields! {
    Address => "address";
    Age => "age";
    City => "city";
    Country => "country";
    DateOfBirth => "date_of_birth";
    Email => "email";
    FirstName => "first_name";
    Language => "language";
    LastName => "last_name";
    Latitude => "latitude";
    Longitude => "longitude";
    Organization => "organization";
    Phone => "phone";
    Region => "region";
    State => "state";
    TimeZone => "time_zone";
    Title => "title";
    Website => "website";
    ZipCode => "zip_code";
}

impl StandardField {
    /// Looks a field up by its config name.
    pub fn from_name(name: &str) -> Option<StandardField> {
        StandardField::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The comma-separated list of config names, for messages.
    pub fn names() -> String {
        StandardField::ALL.map(StandardField::name).join(", ")
    }
}

impl fmt::Display for StandardField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type a custom attribute's values are parsed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomType {
    /// Text, sent as a string.
    String,
    /// A decimal number, sent digit for digit.
    Number,
    /// `true`/`false` (and the usual spellings), sent as a JSON boolean.
    Bool,
    /// A calendar date, sent as `YYYY-MM-DD`.
    Date,
    /// A point in time, sent as ISO-8601 in UTC.
    Datetime,
}

impl CustomType {
    /// Every custom type, in the order messages list them.
    pub const ALL: [CustomType; 5] = [
        CustomType::String,
        CustomType::Number,
        CustomType::Bool,
        CustomType::Date,
        CustomType::Datetime,
    ];

    /// The name used in config files (`number`).
    pub fn name(self) -> &'static str {
        match self {
            CustomType::String => "string",
            CustomType::Number => "number",
            CustomType::Bool => "bool",
            CustomType::Date => "date",
            CustomType::Datetime => "datetime",
        }
    }

    /// Looks a type up by its config name.
    pub fn from_name(name: &str) -> Option<CustomType> {
        CustomType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The comma-separated list of config names, for messages.
    pub fn names() -> String {
        CustomType::ALL.map(CustomType::name).join(", ")
    }
}

/// What to do when a mapped value is null or empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNull {
    /// Send nothing for it (Attentive advises against nulls).
    #[default]
    Omit,
    /// Send an empty string so that Attentive clears a value this tool set before.
    Clear,
}

/// What to do when two rows of one run have the same normalized identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// Every row of a duplicated identifier is rejected as `duplicate_identifier`.
    #[default]
    Reject,
    /// The first row wins; later ones are rejected.
    First,
    /// The last row wins; earlier ones are rejected.
    Last,
}

/// How to read dates such as `03/04/1990`, which are ambiguous without an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateOrder {
    /// Only unambiguous forms (`YYYY-MM-DD`, `YYYY/MM/DD`, ISO-8601 datetimes) are accepted.
    #[default]
    Iso,
    /// `MM/DD/YYYY` (and `-` or `.` separators) as well.
    Mdy,
    /// `DD/MM/YYYY` (and `-` or `.` separators) as well.
    Dmy,
}

/// A mapped Attentive attribute: a standard field or a named custom attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttributeId {
    /// One of Attentive's standard profile fields.
    Standard(StandardField),
    /// A custom attribute, by its exact (case-sensitive) name.
    Custom(String),
}

impl AttributeId {
    /// The stable key under which the snapshot stores this attribute: `std:first_name` or
    /// `custom:Loyalty Tier`. Renaming the attribute changes the key, so it is backfilled.
    pub fn key(&self) -> String {
        match self {
            AttributeId::Standard(f) => format!("std:{}", f.name()),
            AttributeId::Custom(n) => format!("custom:{n}"),
        }
    }

    /// Parses a [`AttributeId::key`].
    pub fn from_key(key: &str) -> Option<AttributeId> {
        if let Some(n) = key.strip_prefix("std:") {
            StandardField::from_name(n).map(AttributeId::Standard)
        } else {
            key.strip_prefix("custom:")
                .map(|n| AttributeId::Custom(n.to_owned()))
        }
    }
}

impl fmt::Display for AttributeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeId::Standard(s) => write!(f, "{s}"),
            AttributeId::Custom(n) => write!(f, "custom {n:?}"),
        }
    }
}

/// One mapped attribute as the config declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeMapping {
    /// The attribute it sets.
    pub attribute: AttributeId,
    /// The model column that feeds it.
    pub column: String,
    /// For custom attributes: the declared type (`None` = as the model types it).
    pub custom_type: Option<CustomType>,
}

/// The identifier column and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Identifier {
    /// The model column holding it.
    pub column: String,
    /// Email or phone.
    pub kind: IdentifierKind,
}

/// The rules that turn raw cells into canonical values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NormalizeOptions {
    /// Region (ISO 3166-1 alpha-2) for phones written in national format. `None` means
    /// national-format phones are rejected: the tool never guesses `+1`.
    pub default_phone_region: Option<phonenumber::country::Id>,
    /// How ambiguous dates are read.
    pub date_order: DateOrder,
    /// The day dates of birth are checked against ("not in the future"), given by the caller:
    /// this crate reads no clock. `None`: they are not checked against a day (runner sets
    /// today, UTC, each time it binds a mapping).
    pub today: Option<chrono::NaiveDate>,
}

/// A whole mapping as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Which column matches rows to existing contacts.
    pub identifier: Identifier,
    /// The mapped attributes, in config order.
    pub attributes: Vec<AttributeMapping>,
    /// What a null value does.
    pub on_null: OnNull,
    /// Which row of a duplicated identifier wins.
    pub duplicates: DuplicatePolicy,
    /// How raw cells are normalized.
    pub options: NormalizeOptions,
}

/// A mapping problem found before any row is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    #[error(
        "column `{column}` (mapped to {target}) is not in the model; its columns are: {available}"
    )]
    /// `column` and `available` are cut for messages (see [`crate::message`]).
    UnknownColumn {
        /// The column the config names.
        column: String,
        /// The attribute (or identifier) it feeds.
        target: String,
        /// The model's columns, for the message.
        available: String,
    },
    #[error(
        "custom attribute name {name:?} is {len} characters long; Attentive allows at most 200"
    )]
    /// A custom attribute name beyond Attentive's 200 characters.
    NameTooLong {
        /// The name (cut for the message).
        name: String,
        /// Its length in characters.
        len: usize,
    },
    #[error("custom attribute name must not be empty or only spaces")]
    /// A custom attribute without a name.
    EmptyName,
    #[error("custom attribute name {name:?} has leading or trailing spaces; Attentive names are exact, so write it without them")]
    /// A custom attribute name with spaces around it.
    NameSpaces {
        /// The name.
        name: String,
    },
    #[error("custom attribute name {name:?} contains a control character")]
    /// A custom attribute name with a control character.
    NameControl {
        /// The name.
        name: String,
    },
    #[error("{attribute} is mapped twice")]
    /// One attribute mapped twice.
    Duplicate {
        /// The attribute.
        attribute: String,
    },
    #[error("standard field `{field}` is the identifier already (column `{column}`); map it once")]
    /// The identifier's own standard field mapped again.
    IdentifierAgain {
        /// `email` or `phone`.
        field: StandardField,
        /// The identifier's column.
        column: String,
    },
    #[error("a custom type applies to custom attributes only, not to standard field `{field}`")]
    /// A custom type given to a standard field (whose type is Attentive's).
    TypeOnStandard {
        /// The field.
        field: StandardField,
    },
    #[error("{}", clear_identifier_message(*field))]
    /// `on_null = "clear"` with a mapped `email`/`phone` field, which Attentive cannot clear.
    ClearIdentifier {
        /// The field.
        field: StandardField,
    },
}

/// Why `on_null = "clear"` cannot go with a mapped `email`/`phone` standard field.
pub fn clear_identifier_message(field: StandardField) -> String {
    format!(
        "on_null = \"clear\" cannot apply to standard field `{field}`: Attentive cannot remove a \
         contact's {field} through attribute updates, so every clear would reject the contact; \
         use on_null = \"omit\", or map `{field}` in an activation of its own with on_null = \"omit\""
    )
}

/// Whether `on_null = "clear"` may clear `attribute` by sending `""`: only string fields.
///
/// Never an identifier field (`email`, `phone`: Attentive cannot remove them; the config
/// refuses the combination), never a non-string field: `age` (integer), `date_of_birth` (a
/// date), a custom attribute declared `number`, `bool`, `date` or `datetime`, or an undeclared
/// custom attribute whose last acknowledged value (`previous`) is not text. For those a null is
/// omitted, as with `on_null = "omit"`: the value last sent stays in Attentive.
pub fn clears_with_empty_string(
    attribute: &AttributeId,
    custom_type: Option<CustomType>,
    previous: Option<&crate::value::Canonical>,
) -> bool {
    use StandardField as F;
    match attribute {
        AttributeId::Standard(F::Email | F::Phone | F::Age | F::DateOfBirth) => false,
        AttributeId::Standard(_) => true,
        AttributeId::Custom(_) => match custom_type {
            Some(CustomType::String) => true,
            Some(_) => false,
            None => matches!(previous, Some(crate::value::Canonical::Text(_))),
        },
    }
}

/// Longest custom attribute name Attentive accepts.
pub const MAX_CUSTOM_NAME_CHARS: usize = 200;

/// Checks a custom attribute name against Attentive's rules.
pub fn check_custom_name(name: &str) -> Result<(), MappingError> {
    let len = name.chars().count();
    if name.trim().is_empty() {
        return Err(MappingError::EmptyName);
    }
    if len > MAX_CUSTOM_NAME_CHARS {
        return Err(MappingError::NameTooLong {
            name: name.to_owned(),
            len,
        });
    }
    if name.trim() != name {
        return Err(MappingError::NameSpaces {
            name: name.to_owned(),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(MappingError::NameControl {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// One attribute bound to a column index of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundAttribute {
    /// The attribute.
    pub attribute: AttributeId,
    /// The snapshot key, [`AttributeId::key`].
    pub key: String,
    /// The model column that feeds it.
    pub column: String,
    /// That column's index in [`crate::value::SourceRow::values`].
    pub index: usize,
    /// The declared type of a custom attribute (`None`: the value's own).
    pub custom_type: Option<CustomType>,
}

/// A mapping checked against a model's columns: what the planner runs. Made only by
/// [`Mapping::bind`], which keeps its parts consistent (columns resolved, attributes sorted,
/// the signature of exactly these parts); read through its accessors.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundMapping {
    pub(crate) identifier: Identifier,
    pub(crate) identifier_index: usize,
    pub(crate) attributes: Vec<BoundAttribute>,
    pub(crate) on_null: OnNull,
    pub(crate) duplicates: DuplicatePolicy,
    pub(crate) options: NormalizeOptions,
    pub(crate) signature: u64,
}

impl Mapping {
    /// Checks every rule and resolves columns. Returns every problem found, not just the first.
    pub fn bind(&self, columns: &[String]) -> Result<BoundMapping, Vec<MappingError>> {
        let mut errors = Vec::new();
        let find = |column: &str, target: String, errors: &mut Vec<MappingError>| {
            let idx = columns.iter().position(|c| c == column);
            if idx.is_none() {
                errors.push(MappingError::UnknownColumn {
                    column: crate::message::excerpt(column).into_owned(),
                    target,
                    available: crate::message::name_list(columns),
                });
            }
            idx
        };
        let identifier_index = find(
            &self.identifier.column,
            format!("the {} identifier", self.identifier.kind.as_str()),
            &mut errors,
        );
        let mut attributes: Vec<BoundAttribute> = Vec::new();
        for m in &self.attributes {
            match &m.attribute {
                AttributeId::Custom(name) => {
                    if let Err(e) = check_custom_name(name) {
                        errors.push(e);
                    }
                }
                AttributeId::Standard(field) => {
                    if m.custom_type.is_some() {
                        errors.push(MappingError::TypeOnStandard { field: *field });
                    }
                    let is_identifier = matches!(
                        (field, self.identifier.kind),
                        (StandardField::Email, IdentifierKind::Email)
                            | (StandardField::Phone, IdentifierKind::Phone)
                    );
                    if is_identifier {
                        errors.push(MappingError::IdentifierAgain {
                            field: *field,
                            column: self.identifier.column.clone(),
                        });
                    } else if self.on_null == OnNull::Clear
                        && matches!(field, StandardField::Email | StandardField::Phone)
                    {
                        errors.push(MappingError::ClearIdentifier { field: *field });
                    }
                }
            }
            let key = m.attribute.key();
            if attributes.iter().any(|a| a.key == key) {
                errors.push(MappingError::Duplicate {
                    attribute: m.attribute.to_string(),
                });
                continue;
            }
            if let Some(index) = find(&m.column, m.attribute.to_string(), &mut errors) {
                attributes.push(BoundAttribute {
                    key,
                    attribute: m.attribute.clone(),
                    column: m.column.clone(),
                    index,
                    custom_type: m.custom_type,
                });
            }
        }
        match identifier_index {
            Some(identifier_index) if errors.is_empty() => {
                attributes.sort_by(|a, b| a.key.cmp(&b.key));
                let keys: Vec<(&str, Option<CustomType>)> = attributes
                    .iter()
                    .map(|a| (a.key.as_str(), a.custom_type))
                    .collect();
                let signature = crate::fingerprint::mapping_signature(
                    self.identifier.kind,
                    self.on_null,
                    &self.options,
                    &keys,
                );
                Ok(BoundMapping {
                    signature,
                    identifier: self.identifier.clone(),
                    identifier_index,
                    attributes,
                    on_null: self.on_null,
                    duplicates: self.duplicates,
                    options: self.options.clone(),
                })
            }
            _ => Err(errors),
        }
    }
}

impl BoundMapping {
    /// The identifier's column and kind.
    pub fn identifier(&self) -> &Identifier {
        &self.identifier
    }

    /// The identifier column's index in [`crate::value::SourceRow::values`].
    pub fn identifier_index(&self) -> usize {
        self.identifier_index
    }

    /// The mapped attributes, sorted by snapshot key (so fingerprints do not depend on the
    /// config's order); a change's [`crate::plan::AttributeChange::attribute`] indexes them.
    pub fn attributes(&self) -> &[BoundAttribute] {
        &self.attributes
    }

    /// What a null value does.
    pub fn on_null(&self) -> OnNull {
        self.on_null
    }

    /// Which row of a duplicated identifier wins.
    pub fn duplicates(&self) -> DuplicatePolicy {
        self.duplicates
    }

    /// How raw cells are normalized.
    pub fn options(&self) -> &NormalizeOptions {
        &self.options
    }

    /// [`crate::fingerprint::mapping_signature`] of this mapping: part of every row
    /// fingerprint.
    pub fn signature(&self) -> u64 {
        self.signature
    }

    /// The snapshot keys of every mapped attribute.
    pub fn attribute_keys(&self) -> impl Iterator<Item = &str> {
        self.attributes.iter().map(|a| a.key.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(attrs: Vec<AttributeMapping>) -> Mapping {
        Mapping {
            identifier: Identifier {
                column: "email".into(),
                kind: IdentifierKind::Email,
            },
            attributes: attrs,
            on_null: OnNull::Omit,
            duplicates: DuplicatePolicy::Reject,
            options: NormalizeOptions::default(),
        }
    }

    fn attr(a: AttributeId, col: &str) -> AttributeMapping {
        AttributeMapping {
            attribute: a,
            column: col.into(),
            custom_type: None,
        }
    }

    #[test]
    fn nineteen_standard_fields_with_unique_names() {
        let mut names: Vec<_> = StandardField::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 19);
        for f in StandardField::ALL {
            assert_eq!(StandardField::from_name(f.name()), Some(f));
            let id = AttributeId::Standard(f);
            assert_eq!(AttributeId::from_key(&id.key()), Some(id));
        }
    }

    #[test]
    fn bind_reports_every_problem() {
        let cols = vec!["email".to_string(), "fname".to_string()];
        let m = mapping(vec![
            attr(AttributeId::Standard(StandardField::FirstName), "fname"),
            attr(AttributeId::Standard(StandardField::FirstName), "fname"),
            attr(AttributeId::Custom("x".repeat(201)), "fname"),
            attr(AttributeId::Custom("Tier".into()), "tier"),
            attr(AttributeId::Standard(StandardField::Email), "email"),
        ]);
        let errs = m.bind(&cols).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 4, "{text:#?}");
        assert!(text[0].contains("mapped twice"));
        assert!(text[1].contains("201 characters"));
        assert!(text[2].contains("column `tier`") && text[2].contains("email, fname"));
        assert!(text[3].contains("identifier already"));
    }

    #[test]
    fn bind_sorts_attributes_by_key() {
        let cols = vec!["email".to_string(), "a".to_string(), "b".to_string()];
        let m = mapping(vec![
            attr(AttributeId::Custom("Zed".into()), "a"),
            attr(AttributeId::Standard(StandardField::City), "b"),
        ]);
        let b = m.bind(&cols).unwrap();
        let keys: Vec<_> = b.attribute_keys().collect();
        assert_eq!(keys, ["custom:Zed", "std:city"]);
        assert_eq!(b.attributes[0].index, 1);
    }

    /// Issue 12, item 8: `on_null = "clear"` with a mapped phone field made every later
    /// write of the contact a rejection; the mapping refuses it.
    #[test]
    fn regression_clear_with_a_phone_field_is_refused() {
        let cols = vec!["email".to_string(), "mobile".to_string()];
        let mut m = mapping(vec![attr(
            AttributeId::Standard(StandardField::Phone),
            "mobile",
        )]);
        assert!(m.bind(&cols).is_ok());
        m.on_null = OnNull::Clear;
        let errs = m.bind(&cols).unwrap_err();
        assert_eq!(
            errs,
            [MappingError::ClearIdentifier {
                field: StandardField::Phone
            }]
        );
        let text = errs[0].to_string();
        assert!(
            text.contains("cannot apply to standard field `phone`"),
            "{text}"
        );
    }

    #[test]
    fn custom_names_are_checked() {
        assert!(check_custom_name("Loyalty Tier").is_ok());
        assert!(check_custom_name(&"é".repeat(200)).is_ok());
        assert!(check_custom_name(&"é".repeat(201)).is_err());
        assert!(check_custom_name(" Tier").is_err());
        assert!(check_custom_name("").is_err());
        assert!(check_custom_name("a\nb").is_err());
    }
}

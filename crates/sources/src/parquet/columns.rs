//! The schema of a Parquet model: its top-level fields, the checks of their names and of
//! the files of a folder against the first, and how each field's values are typed.

use super::*;

/// A top-level field as compared across the files of a folder.
pub(super) struct FieldShape {
    pub(super) name: String,
    /// The field as the `parquet` crate prints it, without its top-level `REQUIRED` or
    /// `OPTIONAL`, on one line: for messages.
    pub(super) shape: String,
    /// What must be the same in every file: how a scalar's values are typed (so `INT32` and
    /// `INT64`, or `STRING` and legacy `UTF8`, are the same), or a nested field's shape.
    pub(super) key: String,
}

pub(super) fn field_shapes(schema: &SchemaDescriptor) -> Vec<FieldShape> {
    let plans = plans(schema);
    schema
        .root_schema()
        .get_fields()
        .iter()
        .zip(plans)
        .map(|(field, plan)| {
            let mut printed = Vec::new();
            ::parquet::schema::printer::print_schema(&mut printed, field);
            let printed = String::from_utf8_lossy(&printed);
            let one_line = printed.split_whitespace().collect::<Vec<_>>().join(" ");
            let shape = ["REQUIRED ", "OPTIONAL "]
                .iter()
                .find_map(|p| one_line.strip_prefix(p))
                .unwrap_or(&one_line)
                .to_owned();
            let key = match plan.conv {
                Conv::Nested(_) => shape.clone(),
                conv => format!("{conv:?}"),
            };
            FieldShape {
                name: field.name().to_owned(),
                shape,
                key,
            }
        })
        .collect()
}

/// What is wrong with the column names, if anything.
pub(super) fn check_names(shapes: &[FieldShape]) -> Result<(), String> {
    if shapes.is_empty() {
        return Err("the schema has no columns".to_owned());
    }
    match name_problem(shapes.iter().map(|s| s.name.as_str())) {
        Some(NameProblem::Unnamed { position }) => {
            Err(format!("column {position} of the schema has no name"))
        }
        Some(NameProblem::Twice {
            name,
            first,
            second,
        }) => Err(format!(
            "the schema has two columns named `{}`, at positions {first} and {second}",
            sync_core::message::excerpt(name),
        )),
        None => Ok(()),
    }
}

/// How the columns of a file differ from those of `first`, if they do.
pub(super) fn schema_difference(
    expected: &[FieldShape],
    found: &[FieldShape],
    first: &Path,
) -> Option<String> {
    let first = first.file_name().map_or_else(
        || first.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    // A schema can have thousands of fields: the list is cut (`… and K more`).
    let names = |shapes: &[FieldShape]| {
        use sync_core::message::{excerpt, MAX_NAMES};
        let mut list: Vec<String> = shapes
            .iter()
            .take(MAX_NAMES)
            .map(|s| format!("`{}`", excerpt(&s.name)))
            .collect();
        if shapes.len() > MAX_NAMES {
            list.push(format!("… and {} more", shapes.len() - MAX_NAMES));
        }
        list.join(", ")
    };
    for (i, (e, f)) in expected.iter().zip(found).enumerate() {
        if e.name != f.name {
            return Some(format!(
                "its columns differ from those of {first}, the first file of the folder: column \
                 {} is `{}` here but `{}` there; every file must have the same columns in the \
                 same order",
                i + 1,
                sync_core::message::excerpt(&f.name),
                sync_core::message::excerpt(&e.name)
            ));
        }
        if e.key != f.key {
            return Some(format!(
                "its columns differ from those of {first}, the first file of the folder: column \
                 `{}` is `{}` here but `{}` there; every file must have the same column types",
                sync_core::message::excerpt(&e.name),
                f.shape,
                e.shape
            ));
        }
    }
    if expected.len() != found.len() {
        return Some(format!(
            "its columns differ from those of {first}, the first file of the folder: it has {} \
             columns ({}) where {first} has {} ({}); every file must have the same columns",
            found.len(),
            names(found),
            expected.len(),
            names(expected)
        ));
    }
    None
}

/// How the values of a column become [`Value`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conv {
    Bool,
    /// Signed integers.
    Int,
    /// Unsigned integers, stored in an `INT32` or `INT64` of the same bits.
    UInt,
    /// The unscaled value of a decimal with this scale.
    Decimal(i32),
    Date,
    Time(Unit),
    Timestamp(Unit),
    /// A legacy `INT96` timestamp (nanoseconds of a Julian day).
    Int96,
    /// `FLOAT` or `DOUBLE`.
    Float,
    Float16,
    Text,
    Uuid,
    /// Bytes that are never sent: the kind of [`Value::Unsupported`].
    Binary(&'static str),
    /// A list, map or group: the kind of [`Value::Unsupported`]. Only its first leaf column is
    /// read, for its definition and repetition levels.
    Nested(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    pub(super) fn of(unit: &TimeUnit) -> Self {
        match unit {
            TimeUnit::MILLIS => Unit::Millis,
            TimeUnit::MICROS => Unit::Micros,
            TimeUnit::NANOS => Unit::Nanos,
        }
    }
}

/// How a top-level field is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// The leaf column read for it: the field itself, or the first leaf of a nested field
    /// (`None` for a group without leaves).
    pub(super) leaf: Option<usize>,
    pub(super) conv: Conv,
    pub(super) max_def: i16,
    pub(super) max_rep: i16,
    /// The definition level at which the field itself is present (1 when it is optional).
    pub(super) present_def: i16,
}

/// How each top-level field of `schema` is read.
pub(super) fn plans(schema: &SchemaDescriptor) -> Vec<Plan> {
    let fields = schema.root_schema().get_fields();
    let mut first_leaf = vec![None; fields.len()];
    for leaf in 0..schema.num_columns() {
        if let Some(slot) = first_leaf.get_mut(schema.get_column_root_idx(leaf)) {
            slot.get_or_insert(leaf);
        }
    }
    fields
        .iter()
        .zip(first_leaf)
        .map(|(field, leaf)| {
            let info = field.get_basic_info();
            let repetition = if info.has_repetition() {
                info.repetition()
            } else {
                Repetition::REQUIRED
            };
            let descr = leaf.map(|l| schema.column(l));
            let conv = match (&descr, field.is_group(), repetition) {
                (_, true, _) => {
                    let list = info.logical_type_ref() == Some(&LogicalType::List)
                        || info.converted_type() == ConvertedType::LIST;
                    Conv::Nested(if list { "array" } else { "object" })
                }
                (_, false, Repetition::REPEATED) => Conv::Nested("array"),
                (Some(d), false, _) => classify(d),
                (None, false, _) => Conv::Nested("object"),
            };
            Plan {
                leaf,
                conv,
                max_def: descr.as_ref().map_or(0, |d| d.max_def_level()),
                max_rep: descr.as_ref().map_or(0, |d| d.max_rep_level()),
                present_def: i16::from(repetition == Repetition::OPTIONAL),
            }
        })
        .collect()
}

/// How the values of a primitive, non-repeated column become [`Value`]s.
pub(super) fn classify(d: &ColumnDescriptor) -> Conv {
    let logical = d.logical_type_ref();
    let converted = d.converted_type();
    match d.physical_type() {
        PhysicalType::BOOLEAN => Conv::Bool,
        PhysicalType::INT32 | PhysicalType::INT64 => match logical {
            Some(LogicalType::Decimal { .. }) => Conv::Decimal(d.type_scale()),
            Some(LogicalType::Date) => Conv::Date,
            Some(LogicalType::Time(t)) => Conv::Time(Unit::of(&t.unit)),
            Some(LogicalType::Timestamp(t)) => Conv::Timestamp(Unit::of(&t.unit)),
            Some(LogicalType::Integer(i)) if !i.is_signed => Conv::UInt,
            Some(LogicalType::Integer(_)) => Conv::Int,
            _ => match converted {
                ConvertedType::DECIMAL => Conv::Decimal(d.type_scale()),
                ConvertedType::DATE => Conv::Date,
                ConvertedType::TIME_MILLIS => Conv::Time(Unit::Millis),
                ConvertedType::TIME_MICROS => Conv::Time(Unit::Micros),
                ConvertedType::TIMESTAMP_MILLIS => Conv::Timestamp(Unit::Millis),
                ConvertedType::TIMESTAMP_MICROS => Conv::Timestamp(Unit::Micros),
                ConvertedType::UINT_8
                | ConvertedType::UINT_16
                | ConvertedType::UINT_32
                | ConvertedType::UINT_64 => Conv::UInt,
                _ => Conv::Int,
            },
        },
        PhysicalType::INT96 => Conv::Int96,
        PhysicalType::FLOAT | PhysicalType::DOUBLE => Conv::Float,
        PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => match logical {
            Some(LogicalType::String | LogicalType::Enum | LogicalType::Json) => Conv::Text,
            Some(LogicalType::Decimal { .. }) => Conv::Decimal(d.type_scale()),
            Some(LogicalType::Uuid) => Conv::Uuid,
            Some(LogicalType::Float16) => Conv::Float16,
            _ => match converted {
                ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON => Conv::Text,
                ConvertedType::DECIMAL => Conv::Decimal(d.type_scale()),
                ConvertedType::INTERVAL => Conv::Binary("interval"),
                _ => Conv::Binary("binary"),
            },
        },
    }
}

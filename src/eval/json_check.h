// Structured answers: the first JSON object in a model's text, a small JSON-schema subset, and
// field-level agreement with the expected values.
//
// Schema subset: type (string | number | integer | boolean | object | array | null, or a list
// of them), required, properties, enum, items, minimum, maximum; title and description are
// accepted and ignored. Any other keyword is refused by check_schema, so a dataset never
// believes a rule is enforced when it is not.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ost::eval {

// The first JSON object in `text`: the body of a ```json (or ```) fence when one parses as an
// object, else the first balanced {...} that parses. nullopt when there is none.
std::optional<nlohmann::json> extract_json_object(std::string_view text);

// "" when `schema` uses only the subset and is well formed, else the problem.
std::string check_schema(const nlohmann::json& schema);

// Every violation as "$.path: problem"; empty when the value is valid. With `required` false the
// required lists are not enforced (used to check partial expected values against a schema).
std::vector<std::string> validate_json(const nlohmann::json& schema, const nlohmann::json& value,
                                       bool required = true);

struct FieldScore {
  std::string path;    // "$.items[1].price" style, over the leaves of `expected`
  double score = 0;    // 1 equal; lists of scalars: set F1 of the elements; 0 missing
  std::string got;     // the answer's value there, dumped ("" when missing)
};

// Agreement of `answer` with `expected`, leaf by leaf. Strings compare after answer
// normalization (case, punctuation, articles, width), numbers within 1e-6 relative, lists of
// scalars as sets (partial credit), lists of objects position by position.
std::vector<FieldScore> field_agreement(const nlohmann::json& expected, const nlohmann::json& answer);
double mean_field_score(const std::vector<FieldScore>& f);

}  // namespace ost::eval

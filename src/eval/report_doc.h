// A report as a list of blocks (headings, paragraphs, tables, charts) rendered twice: Markdown
// for a terminal or a merge request, and one self-contained HTML page (inline CSS and SVG).
#pragma once
#include <string>
#include <vector>

namespace ost::eval {

struct Table {
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;
  std::vector<bool> numeric;  // per column: right-aligned in HTML
};

struct Block {
  enum class Kind { kHeading, kPara, kNote, kWarn, kTable, kHtml } kind = Kind::kPara;
  std::string text;  // heading / paragraph text (plain), or raw HTML for kHtml (skipped in Markdown)
  Table table;
};

class ReportDoc {
 public:
  explicit ReportDoc(std::string title) : title_(std::move(title)) {}
  void heading(std::string t) { blocks_.push_back({Block::Kind::kHeading, std::move(t), {}}); }
  void para(std::string t) { blocks_.push_back({Block::Kind::kPara, std::move(t), {}}); }
  void note(std::string t) { blocks_.push_back({Block::Kind::kNote, std::move(t), {}}); }
  void warn(std::string t) { blocks_.push_back({Block::Kind::kWarn, std::move(t), {}}); }
  void table(Table t) { blocks_.push_back({Block::Kind::kTable, "", std::move(t)}); }
  void html(std::string h) { blocks_.push_back({Block::Kind::kHtml, std::move(h), {}}); }
  std::string markdown() const;
  std::string html_page() const;

 private:
  std::string title_;
  std::vector<Block> blocks_;
};

// Formatting helpers shared by the reports.
std::string pct(double v);                  // 0.4321 -> "43.2%"
std::string num(double v, int decimals = 1);
std::string signed_pct(double v);           // +4.0 pp
std::string shorten(const std::string& s, size_t n = 80);  // one line, at most n bytes (UTF-8 safe)

}  // namespace ost::eval

#include "eval/report_doc.h"

#include <cstdio>

#include "eval/svg.h"

namespace ost::eval {

namespace {

std::string md_cell(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '|') o += "\\|";
    else if (c == '\n') o += ' ';
    else o += c;
  }
  return o;
}

}  // namespace

std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", 100 * v);
  return b;
}

std::string num(double v, int decimals) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

std::string signed_pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%+.1f pp", 100 * v);
  return b;
}

std::string shorten(const std::string& s, size_t n) {
  std::string o;
  for (char c : s) o += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  if (o.size() <= n) return o;
  size_t cut = n;
  while (cut > 0 && (uint8_t(o[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 character
  return o.substr(0, cut) + "...";
}

std::string ReportDoc::markdown() const {
  std::string s = "# " + title_ + "\n\n";
  for (auto& b : blocks_) {
    switch (b.kind) {
      case Block::Kind::kHeading: s += "## " + b.text + "\n\n"; break;
      case Block::Kind::kPara: s += b.text + "\n\n"; break;
      case Block::Kind::kNote: s += "_" + b.text + "_\n\n"; break;
      case Block::Kind::kWarn: s += "> **Note:** " + b.text + "\n\n"; break;
      case Block::Kind::kHtml: break;
      case Block::Kind::kTable: {
        const Table& t = b.table;
        s += "|";
        for (auto& h : t.head) s += " " + md_cell(h) + " |";
        s += "\n|";
        for (size_t i = 0; i < t.head.size(); ++i) s += (i < t.numeric.size() && t.numeric[i]) ? "---:|" : "---|";
        s += "\n";
        for (auto& r : t.rows) {
          s += "|";
          for (auto& c : r) s += " " + md_cell(c) + " |";
          s += "\n";
        }
        s += "\n";
        break;
      }
    }
  }
  return s;
}

std::string ReportDoc::html_page() const {
  std::string s = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html_escape(title_) +
                  "</title><style>" + report_css() + "</style></head><body>\n<h1>" + html_escape(title_) + "</h1>\n";
  for (auto& b : blocks_) {
    switch (b.kind) {
      case Block::Kind::kHeading: s += "<h2>" + html_escape(b.text) + "</h2>\n"; break;
      case Block::Kind::kPara: s += "<p class=\"meta\">" + html_escape(b.text) + "</p>\n"; break;
      case Block::Kind::kNote: s += "<p class=\"note\">" + html_escape(b.text) + "</p>\n"; break;
      case Block::Kind::kWarn: s += "<p class=\"warn\">" + html_escape(b.text) + "</p>\n"; break;
      case Block::Kind::kHtml: s += b.text + "\n"; break;
      case Block::Kind::kTable: {
        const Table& t = b.table;
        s += "<table><tr>";
        for (auto& h : t.head) s += "<th>" + html_escape(h) + "</th>";
        s += "</tr>\n";
        for (auto& r : t.rows) {
          s += "<tr>";
          for (size_t i = 0; i < r.size(); ++i)
            s += (i < t.numeric.size() && t.numeric[i] ? "<td class=\"num\">" : "<td>") + html_escape(r[i]) + "</td>";
          s += "</tr>\n";
        }
        s += "</table>\n";
        break;
      }
    }
  }
  return s + "</body></html>\n";
}

}  // namespace ost::eval

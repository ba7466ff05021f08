package console

import (
	"embed"
	"html/template"
	"net/http"
	"strconv"
)

// files holds the console's templates, stylesheet and script, in the binary:
// nothing is fetched from elsewhere.
//
//go:embed templates/*.html assets/console.css assets/console.js
var files embed.FS

// assetTypes are the assets served under assets/ and their types.
var assetTypes = map[string]string{
	"console.css": "text/css; charset=utf-8",
	"console.js":  "text/javascript; charset=utf-8",
}

// pageNames are the pages, each a template beside the layout.
var pageNames = []string{"overview", "events", "event", "recent", "error"}

// pages holds each page's template set (the layout and the page).
var pages = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		out[name] = template.Must(template.New(name).ParseFS(files, "templates/layout.html", "templates/parts.html", "templates/"+name+".html"))
	}
	return out
}()

// serveAsset answers an embedded asset.
func serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	b, err := files.ReadFile("assets/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", assetTypes[name])
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

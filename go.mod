module github.com/philotes/philotes-worker

go 1.26.8
